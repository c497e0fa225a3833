"""Talk to `kubectl-executor mcp` the way an agent host does: the MCP SDK's client over stdio.

python examples/mcp_client.py   # kubectl's current context, else the local emulator

Needs the extra: pip install 'kubectl-executor[mcp]'. The server gets its cluster settings from
KUBECTL_EXECUTOR_* variables, as a host's `mcpServers` entry would pass them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from _cluster import cluster
from mcp import Client, StdioServerParameters

TOOLS = '''
import csv

def column_sum(path, column):
    """Sum a column of a CSV file in the workspace."""
    with open(path) as fh:
        return sum(float(row[column]) for row in csv.DictReader(fh))
'''


def server(options: dict[str, Any]) -> StdioServerParameters:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "KUBECONFIG", "KUBECACHEDIR") if k in os.environ}
    for key, value in options.items():
        env[f"KUBECTL_EXECUTOR_{key.upper()}"] = str(value)
    script = Path(sys.executable).with_name("kubectl-executor")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kubectl_executor"]
    return StdioServerParameters(command=command[0], args=[*command[1:], "mcp"], env=env)


async def download(client: Client, path: str) -> tuple[bytes, str]:
    """A whole file: download_file returns ranges that fit one message; follow next_offset."""
    content, offset = b"", 0
    while True:
        result = await client.call_tool("download_file", {"path": path, "offset": offset})
        meta = data(result)
        block = result.content[1]  # the bytes, once: a text block, or a resource with base64
        content += block.text.encode() if block.type == "text" else base64.b64decode(block.resource.blob)
        if meta["next_offset"] is None:
            return content, meta["sha256"]
        offset = meta["next_offset"]


def data(result: Any) -> dict[str, Any]:
    if result.is_error:
        raise RuntimeError(result.content[0].text)
    structured: dict[str, Any] = result.structured_content
    return structured


async def session(params: StdioServerParameters) -> bool:
    # Leaving the client closes the server's stdin: the server then deletes the MCP session's pod.
    async with Client(params) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        print("tools:", ", ".join(tools))

        ran = data(
            await client.call_tool(
                "run_code", {"language": "python", "code": "import sys; print(sys.version[:4]); sys.exit(3)"}
            )
        )
        print(f"run_code -> exit {ran['exit_code']} in pod {ran['pod']}, stdout {ran['stdout']!r}")

        slow = data(await client.call_tool("run_code", {"language": "sh", "code": "sleep 30", "timeout": 2}))
        print(f"a 30 s sleep with timeout 2 -> exit {slow['exit_code']}, timed_out={slow['timed_out']}")

        await client.call_tool(
            "upload_file", {"path": "sales.csv", "text": "region,amount\nnorth,10.5\nsouth,4.5\n"}
        )
        await client.call_tool("upload_file", {"path": "report_tools.py", "text": TOOLS})
        total = data(
            await client.call_tool(
                "call_function",
                {
                    "module": "report_tools",
                    "function": "column_sum",
                    "arguments": {"path": "sales.csv", "column": "amount"},
                },
            )
        )
        print(f"call_function column_sum -> {total['status']} {total['value']}")

        blob = bytes(range(256))
        await client.call_tool(
            "upload_file", {"path": "blob.bin", "content_base64": base64.b64encode(blob).decode()}
        )
        down, sha256 = await download(client, "blob.bin")
        same = down == blob and sha256 == hashlib.sha256(blob).hexdigest()
        print(f"binary round trip of {len(down)} bytes: {'identical' if same else 'DIFFERENT'}")

        listing = data(await client.call_tool("list_files", {}))
        print("workspace:", ", ".join(e["path"] for e in listing["entries"]))

        bad = await client.call_tool("download_file", {"path": "../etc/passwd"})
        print("a path outside the workspace is a tool error:", bad.is_error)

        return (
            ran["exit_code"] == 3
            and slow["exit_code"] == 124
            and total["value"] == 15.0
            and same
            and bad.is_error
        )


def main() -> int:
    with cluster() as options:
        ok = anyio.run(session, server(options))
    print("pod deleted." if ok else "unexpected results!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
