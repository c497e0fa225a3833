// Drives kubectl-executor's MCP server with the official TypeScript SDK client, for the
// integration tests (tests/integration/test_mcp_ts.py). One scenario per run, given as JSON on
// argv[2]:
//   {"transport": "stdio", "command": "...", "args": [...], "env": {...}}  or
//   {"transport": "http", "url": "http://127.0.0.1:PORT/mcp"}
//   "steps": [{"call": "run_code", "arguments": {...}, "timeoutMs": 3000, "resetTimeoutOnProgress": true},
//             {"download": "path"}, {"reconnect": true},
//             {"bench": "run_code", "arguments": {...}, "rounds": 50}, ...]
// Prints one JSON line per step: a call's isError, text, structuredContent and the progress
// notifications it got; a download's size, sha256 and number of ranges (assembled here from the
// ranges the server sent, text blocks or base64 resources). A client error is a step result too.
import { createHash } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const scenario = JSON.parse(process.argv[2]);

function transport() {
  if (scenario.transport === "stdio") {
    return new StdioClientTransport({
      command: scenario.command,
      args: scenario.args,
      env: scenario.env,
      stderr: "inherit",
    });
  }
  return new StreamableHTTPClientTransport(new URL(scenario.url));
}

async function connect() {
  const client = new Client({ name: "kx-ts-test", version: "1.0.0" });
  await client.connect(transport());
  return client;
}

async function call(client, step) {
  const progress = [];
  const options = {};
  if (step.timeoutMs) options.timeout = step.timeoutMs;
  if (step.resetTimeoutOnProgress) {
    options.resetTimeoutOnProgress = true;
    options.onprogress = (p) => progress.push(p);
  }
  try {
    const result = await client.callTool({ name: step.call, arguments: step.arguments ?? {} }, undefined, options);
    return {
      isError: Boolean(result.isError),
      text: result.content?.[0]?.text ?? "",
      structured: result.structuredContent ?? null,
      progress: progress.length,
      content: (result.content ?? []).map(summary),
    };
  } catch (err) {
    return { clientError: String(err?.message ?? err), code: err?.code ?? null, progress: progress.length };
  }
}

// A content block as the tests check it: an image's type, length and first bytes (decoded here),
// a resource's MIME type and text.
function summary(block) {
  if (block.type === "image") {
    const bytes = Buffer.from(block.data, "base64");
    return { type: "image", mimeType: block.mimeType, bytes: bytes.length, head: bytes.subarray(0, 8).toString("hex") };
  }
  if (block.type === "resource") {
    return { type: "resource", mimeType: block.resource.mimeType, uri: block.resource.uri, text: block.resource.text ?? null };
  }
  return { type: block.type };
}

async function download(client, path) {
  const hash = createHash("sha256");
  let offset = 0;
  let ranges = 0;
  let size = 0;
  let sha256 = null;
  let encoding = null;
  for (;;) {
    const result = await client.callTool({ name: "download_file", arguments: { path, offset } });
    if (result.isError) return { isError: true, text: result.content?.[0]?.text ?? "" };
    const meta = result.structuredContent;
    const block = result.content[1];
    const bytes = block.type === "text" ? Buffer.from(block.text, "utf8") : Buffer.from(block.resource.blob, "base64");
    if (bytes.length !== meta.length) throw new Error(`range at ${offset}: ${bytes.length} bytes, said ${meta.length}`);
    hash.update(bytes);
    size += bytes.length;
    ranges += 1;
    sha256 = meta.sha256;
    encoding = meta.encoding;
    if (meta.next_offset === null || meta.next_offset === undefined) break;
    offset = meta.next_offset;
  }
  return { size, ranges, encoding, sha256, assembledSha256: hash.digest("hex") };
}

let client = await connect();
for (const step of scenario.steps) {
  let out;
  if (step.reconnect) {
    await client.close(); // the SDK's close(): no DELETE, the server's session stays open
    client = await connect();
    out = { reconnected: true };
  } else if (step.bench) {
    const ms = [];
    for (let i = 0; i < step.rounds; i++) {
      const start = performance.now();
      const result = await client.callTool({ name: step.bench, arguments: step.arguments ?? {} });
      ms.push(performance.now() - start);
      if (result.isError) throw new Error(result.content?.[0]?.text);
    }
    out = { ms };
  } else if (step.download) {
    out = await download(client, step.download);
  } else {
    out = await call(client, step);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
await client.close();
