"""MCP benchmark: the per-call time of a trivial ``run_code`` through real MCP clients, against an
emulator this script starts, through the real kubectl.

    .venv/bin/python benchmarks/mcp_bench.py            # --rounds N, --kubectl PATH

Clients: the Python SDK's (``mcp``, a dependency of the extra) and, when tests/mcp_clients/ts is
installed (``.ci/setup``), the official TypeScript SDK's; each over stdio and streamable HTTP. The
first call of each (the pod start) is not counted. The server runs each session's blocks over the
library's persistent session (one long-lived exec per pod).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import NAMESPACE, emulator, pick_kubectl  # noqa: E402

TS_CLIENT = ROOT / "tests" / "mcp_clients" / "ts"
CALL = {"language": "python", "code": "print(1)"}
TARGET_MS = 30.0


def server_argv() -> list[str]:
    script = Path(sys.executable).with_name("kubectl-executor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kubectl_executor"]


def server_env(kubectl: str, kubeconfig: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "KUBECACHEDIR": os.environ.get("KUBECACHEDIR", ""),
        "KUBECTL_EXECUTOR_KUBECTL": kubectl,
        "KUBECTL_EXECUTOR_KUBECONFIG": kubeconfig,
        "KUBECTL_EXECUTOR_NAMESPACE": NAMESPACE,
    }


class HttpServer:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*server_argv(), "mcp", "--transport", "http", "--port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            if "serving streamable HTTP on " in line:
                self.url = line.rsplit(" ", 1)[1].strip()
                break
        if not self.url:
            sys.exit("the HTTP server did not start")
        # Keep reading its stderr, so that the server never blocks on a full pipe.
        self.log = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self.log.start()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)


async def python_client(transport: str, env: dict[str, str], rounds: int, url: str = "") -> list[float]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client

    async def drive(session: ClientSession) -> list[float]:
        await session.initialize()
        await session.call_tool("run_code", CALL)  # the pod start
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            result = await session.call_tool("run_code", CALL)
            times.append((time.perf_counter() - start) * 1000)
            assert not result.is_error, result.content
        return times

    if transport == "stdio":
        argv = server_argv()
        params = StdioServerParameters(command=argv[0], args=[*argv[1:], "mcp", "--quiet"], env=env)
        with open(os.devnull, "w") as devnull:
            async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as session:
                return await drive(session)
    async with streamable_http_client(url) as (r, w), ClientSession(r, w) as session:
        return await drive(session)


def ts_client(transport: str, env: dict[str, str], rounds: int, url: str = "") -> list[float] | None:
    node = shutil.which("node")
    if node is None or not (TS_CLIENT / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        return None
    argv = server_argv()
    scenario: dict[str, Any] = (
        {"transport": "stdio", "command": argv[0], "args": [*argv[1:], "mcp", "--quiet"], "env": env}
        if transport == "stdio"
        else {"transport": "http", "url": url}
    )
    scenario["steps"] = [
        {"call": "run_code", "arguments": CALL},
        {"bench": "run_code", "arguments": CALL, "rounds": rounds},
    ]
    done = subprocess.run(
        [node, str(TS_CLIENT / "client.mjs"), json.dumps(scenario)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=TS_CLIENT,
    )
    ms: list[float] = json.loads(done.stdout.splitlines()[-1])["ms"]
    return ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50, help="calls per client and transport")
    ap.add_argument("--kubectl", default=None, help="kubectl binary (default: the one on PATH)")
    args = ap.parse_args()
    kubectl = pick_kubectl(args.kubectl)
    rows: list[tuple[str, str, list[float] | None]] = []
    with tempfile.TemporaryDirectory(prefix="kx-bench-mcp-") as tmp:
        os.environ["KUBECACHEDIR"] = str(Path(tmp) / "cache")
        with emulator(Path(tmp)) as kubeconfig:
            subprocess.run(
                [kubectl, f"--kubeconfig={kubeconfig}", "create", "namespace", NAMESPACE], capture_output=True
            )
            env = server_env(kubectl, kubeconfig)
            rows.append(("Python SDK", "stdio", asyncio.run(python_client("stdio", env, args.rounds))))
            rows.append(("TypeScript SDK", "stdio", ts_client("stdio", env, args.rounds)))
            http = HttpServer(env)
            try:
                rows.append(
                    ("Python SDK", "HTTP", asyncio.run(python_client("http", env, args.rounds, http.url)))
                )
                rows.append(("TypeScript SDK", "HTTP", ts_client("http", env, args.rounds, http.url)))
            finally:
                http.stop()
    print(
        f"MCP run_code('print(1)') per call, {args.rounds} calls after the first, emulator, kubectl {kubectl}"
    )
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    ok = True
    for client, transport, ms in rows:
        if ms is None:
            print(
                f"  {client:<15} {transport:<6} skipped: tests/mcp_clients/ts not installed (run .ci/setup)"
            )
            continue
        median = statistics.median(ms)
        ok = ok and median < TARGET_MS
        print(
            f"  {client:<15} {transport:<6} median {median:6.1f} ms   p90 {sorted(ms)[int(len(ms) * 0.9)]:6.1f} ms"
        )
    print(f"target: median under {TARGET_MS:g} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
