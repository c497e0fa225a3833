"""The MCP server through the Python SDK's own client: the real ``kubectl-executor mcp`` process over
stdio and over streamable HTTP, the real kubectl, the emulator (or a cluster). Cluster access reaches
the server through KUBECTL_EXECUTOR_* variables, the MCP options through flags. The TypeScript SDK's
client drives the same server in test_mcp_ts.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from kubectl_executor._cluster.labels import OWNER_HOST_LABEL, OWNER_ID_LABEL, OWNER_PID_LABEL, POOL_LABEL

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install 'kubectl-executor[mcp]'")

import anyio
from kx_cluster import Cluster
from kx_mcp import (
    BINARY_9MIB,
    TEXT_4MIB,
    binary_9mib,
    http_server,
    pod_names,
    server_command,
    server_env,
    text_4mib,
    wait_deleted,
)
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from kubectl_executor._cluster.manifest import label_safe

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOOLS = {
    "run_code",
    "run_file",
    "upload_file",
    "download_file",
    "call_function",
    "list_files",
    "reset_workspace",
}

TOOLS_MODULE = """\
import os

def add(a, b):
    print("adding", a, b)
    return a + b

def where():
    return os.getcwd()

def fail():
    raise KeyError("missing")
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[IO[str]]:
    """The server's stderr (its log), shown when a test fails."""
    path = tmp_path / "server.err"
    with path.open("w+") as fh:
        yield fh
        fh.seek(0)
        sys.stderr.write(f"--- server stderr ---\n{fh.read()}")


@contextlib.asynccontextmanager
async def stdio_session(cluster: Cluster, errlog: IO[str], *flags: str) -> AsyncIterator[ClientSession]:
    command = server_command()
    params = StdioServerParameters(
        command=command[0], args=[*command[1:], "mcp", "-v", *flags], env=server_env(cluster)
    )
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    data: dict[str, Any] = result.structured_content
    return data


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    text: str = result.content[0].text
    return text


async def download(call: Callable[..., Awaitable[Any]], path: str) -> tuple[bytes, list[dict[str, Any]]]:
    """A whole file through download_file's ranges (following next_offset); checks its sha256."""
    data, metas, offset = b"", [], 0
    while True:
        result = await call("download_file", {"path": path, "offset": offset})
        meta = structured(result)
        block = result.content[1]
        data += block.text.encode() if block.type == "text" else base64.b64decode(block.resource.blob)
        assert len(data) == meta["offset"] + meta["length"]
        metas.append(meta)
        if meta["next_offset"] is None:
            break
        offset = meta["next_offset"]
    assert hashlib.sha256(data).hexdigest() == metas[-1]["sha256"]
    return data, metas


# -- stdio ----------------------------------------------------------------------------------------


async def test_stdio_runs_code_with_exit_codes_and_timeouts_and_deletes_the_pod_at_the_end(
    cluster: Cluster, errlog: IO[str]
) -> None:
    async with stdio_session(cluster, errlog) as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        assert tools == TOOLS
        assert pod_names(cluster) == set()  # no pod until the first call

        ok = structured(await session.call_tool("run_code", {"language": "python", "code": "print(6 * 7)"}))
        three = structured(
            await session.call_tool(
                "run_code",
                {
                    "language": "python",
                    "code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)",
                },
            )
        )
        slow = structured(
            await session.call_tool(
                "run_code", {"language": "sh", "code": "echo started; sleep 60; echo never", "timeout": 2}
            )
        )
        shell = structured(
            await session.call_tool("run_code", {"language": "bash", "code": "echo $((1 + 1)) $PWD"})
        )

        assert (ok["exit_code"], ok["stdout"], ok["timed_out"]) == (0, "42\n", False)
        assert (three["exit_code"], three["stdout"], three["stderr"]) == (3, "out\n", "err\n")
        assert (slow["exit_code"], slow["timed_out"], slow["stdout"]) == (124, True, "started\n")
        assert shell["stdout"] == "2 /workspace\n"

        big = structured(
            await session.call_tool(
                "run_code", {"language": "python", "code": "print('x' * 200_000, end='')"}
            )
        )
        assert big["truncated"] and len(big["stdout"]) < 100_000
        log = next(
            word.rstrip(",") for word in big["truncation_note"].split() if word.endswith((".out", ".out,"))
        )
        full, _ = await download(session.call_tool, log)
        assert full == b"x" * 200_000  # the whole output, kept in the pod
        pod = ok["pod"]
        assert {three["pod"], slow["pod"], shell["pod"]} == {pod}
        assert pod in pod_names(cluster)

    # The client closed stdin: the server deleted the MCP session's pod before it exited.
    assert pod not in pod_names(cluster)


async def test_stdio_files_binary_round_trip_and_function_calls(cluster: Cluster, errlog: IO[str]) -> None:
    data = bytes(range(256)) * 64
    async with stdio_session(cluster, errlog) as session:
        up = structured(
            await session.call_tool(
                "upload_file", {"path": "data/all.bin", "content_base64": base64.b64encode(data).decode()}
            )
        )
        down, metas = await download(session.call_tool, "data/all.bin")
        await session.call_tool("upload_file", {"path": "tools.py", "text": TOOLS_MODULE})
        added = structured(
            await session.call_tool(
                "call_function", {"module": "tools", "function": "add", "arguments": {"a": 2, "b": 40}}
            )
        )
        cwd = structured(await session.call_tool("call_function", {"module": "tools", "function": "where"}))
        failed = structured(await session.call_tool("call_function", {"module": "tools", "function": "fail"}))
        ran = structured(
            await session.call_tool(
                "upload_file", {"path": "job.py", "text": "import tools\nprint(tools.add(1, 2))\n"}
            )
        )
        job = structured(await session.call_tool("run_file", {"path": "job.py"}))
        listing = structured(await session.call_tool("list_files", {"recursive": True}))
        missing = error_text(await session.call_tool("download_file", {"path": "nope.bin"}))
        escape = error_text(await session.call_tool("upload_file", {"path": "../../etc/x", "text": "x"}))

    digest = hashlib.sha256(data).hexdigest()
    assert (up["path"], up["size"], up["sha256"]) == ("/workspace/data/all.bin", len(data), digest)
    assert down == data and metas[0]["sha256"] == digest
    assert metas[0]["encoding"] == "base64"

    assert (added["status"], added["value"], added["stdout"]) == ("returned", 42, "adding 2 40\n")
    assert cwd["value"] == "/workspace"
    assert (failed["status"], failed["exit_code"]) == ("raised", 1)
    assert failed["error"]["type"] == "KeyError" and "missing" in failed["error"]["message"]

    assert ran["path"] == "/workspace/job.py"
    assert (job["exit_code"], job["stdout"]) == (0, "adding 1 2\n3\n")
    paths = {e["path"]: e for e in listing["entries"]}
    assert paths["data/all.bin"]["size"] == len(data) and paths["data"]["type"] == "dir"
    assert {"tools.py", "job.py"} <= set(paths)
    # The server's helpers and the runs' scratch files are not the model's business.
    assert not any(p.startswith((".kx-", "tmp_code_")) for p in paths), paths
    assert "no such file in the workspace: nope.bin" in missing
    assert "escapes the workspace" in escape


async def test_idle_timeout_deletes_the_pod_and_the_session_gets_a_fresh_one(
    cluster: Cluster, errlog: IO[str]
) -> None:
    async with stdio_session(cluster, errlog, "--idle-timeout", "2s") as session:
        first = structured(await session.call_tool("upload_file", {"path": "keep.txt", "text": "x"}))
        await anyio.to_thread.run_sync(wait_deleted, cluster, first["pod"])  # reaped while the session lives
        assert first["pod"] not in pod_names(cluster)

        again = structured(await session.call_tool("list_files", {}))

        assert again["pod"] != first["pod"]
        assert again["entries"] == []
        assert "idle for more than 2s" in again["notice"]
    assert again["pod"] not in pod_names(cluster)


async def test_a_sigkilled_server_leaves_a_pod_that_gc_removes(cluster: Cluster, errlog: IO[str]) -> None:
    async with stdio_session(cluster, errlog) as session:
        pod = structured(await session.call_tool("run_code", {"language": "sh", "code": "true"}))["pod"]
        labels = next(p for p in cluster.pods() if p["metadata"]["name"] == pod)["metadata"]["labels"]
        assert labels[OWNER_HOST_LABEL] == label_safe(os.uname().nodename)
        os.kill(int(labels[OWNER_PID_LABEL]), signal.SIGKILL)  # the server: no cleanup of its own
        with contextlib.suppress(Exception):
            await session.send_ping()
    assert pod in pod_names(cluster)

    gc = subprocess.run(
        [*server_command(), "gc", "--owner-id", labels[OWNER_ID_LABEL], "-o", "json"],
        env=server_env(cluster),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert gc.returncode == 0, gc.stderr
    assert [(c["name"], c["reason"], c["deleted"]) for c in json.loads(gc.stdout)] == [
        (pod, "owner-gone", True)
    ]
    wait_deleted(cluster, pod)
    assert pod not in pod_names(cluster)


async def test_sigterm_makes_a_stdio_server_delete_its_pod_and_exit(
    cluster: Cluster, errlog: IO[str]
) -> None:
    """Hosts that stop servers with SIGTERM (without closing stdin first) leave no pod either."""
    async with stdio_session(cluster, errlog) as session:
        pod = structured(await session.call_tool("run_code", {"language": "sh", "code": "true"}))["pod"]
        labels = next(p for p in cluster.pods() if p["metadata"]["name"] == pod)["metadata"]["labels"]
        os.kill(int(labels[OWNER_PID_LABEL]), signal.SIGTERM)
        await anyio.to_thread.run_sync(wait_deleted, cluster, pod)  # while the client is still connected
    assert pod not in pod_names(cluster)


async def test_a_warm_pool_serves_the_session(cluster: Cluster, errlog: IO[str]) -> None:
    async with stdio_session(cluster, errlog, "--pool-size", "1") as session:
        result = structured(
            await session.call_tool("run_code", {"language": "python", "code": "print('warm')"})
        )
        labels = next(p for p in cluster.pods() if p["metadata"]["name"] == result["pod"])["metadata"][
            "labels"
        ]

    assert result["stdout"] == "warm\n"
    assert labels[POOL_LABEL] == "mcp"
    assert pod_names(cluster) == set()  # the claimed pod and the pool's spare are both gone


# -- streamable HTTP --------------------------------------------------------------------------------


async def test_http_sessions_get_separate_pods_and_lose_them_when_they_end(
    cluster: Cluster, errlog: IO[str]
) -> None:
    with http_server(cluster, errlog, "--idle-timeout", "0") as (url, proc):
        seen: dict[str, dict[str, Any]] = {}

        async def explicit_session() -> None:
            async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                await exercise(session.call_tool, "alpha")

        async def sdk_client() -> None:
            async with Client(url) as client:  # mode="auto": falls back to the handshake
                await exercise(client.call_tool, "beta")

        async def exercise(call: Any, name: str) -> None:
            up = structured(await call("upload_file", {"path": f"{name}.txt", "text": name}))
            ran = structured(
                await call("run_code", {"language": "sh", "code": "sleep 1; ls *.txt; cat *.txt; exit 3"})
            )
            other = "beta" if name == "alpha" else "alpha"
            missing = error_text(await call("download_file", {"path": f"{other}.txt"}))
            seen[name] = {"pod": up["pod"], "ran": ran, "missing": missing, "live": pod_names(cluster)}

        async with anyio.create_task_group() as tg:
            tg.start_soon(explicit_session)
            tg.start_soon(sdk_client)

        alpha, beta = seen["alpha"], seen["beta"]
        assert alpha["pod"] != beta["pod"]
        assert alpha["ran"]["pod"] == alpha["pod"] and beta["ran"]["pod"] == beta["pod"]
        assert (alpha["ran"]["exit_code"], alpha["ran"]["stdout"]) == (3, "alpha.txt\nalpha")
        assert (beta["ran"]["exit_code"], beta["ran"]["stdout"]) == (3, "beta.txt\nbeta")
        assert "no such file in the workspace" in alpha["missing"]
        assert "no such file in the workspace" in beta["missing"]
        # Each session's DELETE ended its pod (the server is still running).
        for name in (alpha["pod"], beta["pod"]):
            await anyio.to_thread.run_sync(wait_deleted, cluster, name)
        assert proc.poll() is None
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its shutdown
    assert pod_names(cluster) == set()


async def test_http_server_shutdown_deletes_the_pods_of_open_sessions(
    cluster: Cluster, errlog: IO[str]
) -> None:
    with http_server(cluster, errlog) as (url, proc):
        async with (
            streamable_http_client(url, terminate_on_close=False) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            pod = structured(await session.call_tool("run_code", {"language": "sh", "code": "true"}))["pod"]
        assert pod in pod_names(cluster)  # the session was left open
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) in (0, -signal.SIGTERM)  # after a graceful shutdown
    assert pod not in pod_names(cluster)


# -- within the clients' limits ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_session(url: str, *, terminate_on_close: bool = True) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(url, terminate_on_close=terminate_on_close) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def check_big_downloads(session: ClientSession, limit: int) -> None:
    """A 9 MiB binary and a 4 MiB text file, in ranges that each fit ``limit`` bytes of JSON."""
    made = structured(
        await session.call_tool("run_code", {"language": "python", "code": BINARY_9MIB + TEXT_4MIB})
    )
    assert made["exit_code"] == 0, made["stderr"]

    binary, bin_ranges = await download(session.call_tool, "big.bin")
    text, text_ranges = await download(session.call_tool, "big.txt")
    still = structured(await session.call_tool("run_code", {"language": "sh", "code": "echo alive"}))

    assert binary == binary_9mib() and text == text_4mib()
    assert {m["encoding"] for m in bin_ranges} == {"base64"} and {m["encoding"] for m in text_ranges} == {
        "text"
    }
    assert all(m["length"] * 4 // 3 < limit for m in bin_ranges)
    assert all(m["length"] < limit for m in text_ranges)
    assert len(bin_ranges) >= -(-len(binary) * 4 // 3 // limit)  # as many as the limit needs, no fewer
    assert still["stdout"] == "alive\n"  # the session (and its pod) survived


async def test_big_downloads_fit_a_stdio_client(cluster: Cluster, errlog: IO[str]) -> None:
    async with stdio_session(cluster, errlog) as session:
        await check_big_downloads(session, 10 * 1024 * 1024)


async def test_big_downloads_fit_the_python_clients_1mib_sse_events(
    cluster: Cluster, errlog: IO[str]
) -> None:
    with http_server(cluster, errlog) as (url, _):
        async with http_session(url) as session:
            await check_big_downloads(session, 1024 * 1024)


async def test_with_json_responses_the_ranges_are_larger(cluster: Cluster, errlog: IO[str]) -> None:
    with http_server(cluster, errlog, "--json-response") as (url, _):
        async with http_session(url) as session:
            made = structured(
                await session.call_tool("run_code", {"language": "python", "code": BINARY_9MIB})
            )
            assert made["exit_code"] == 0
            binary, ranges = await download(session.call_tool, "big.bin")

    assert binary == binary_9mib()
    assert len(ranges) == 2 and ranges[0]["length"] > 1024 * 1024


async def test_progress_notifications_reach_the_client_while_a_run_goes_on(
    cluster: Cluster, errlog: IO[str]
) -> None:
    seen: list[tuple[float, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, message))

    async with stdio_session(cluster, errlog, "--progress-interval", "0.2") as session:
        first = await session.call_tool(
            "run_code", {"language": "sh", "code": "echo up"}, progress_callback=progress
        )
        starting = list(seen)
        seen.clear()
        ran = await session.call_tool(
            "run_code",
            {"language": "sh", "code": "echo begun; sleep 2; echo done"},
            progress_callback=progress,
        )

    assert structured(first)["stdout"] == "up\n" and structured(ran)["stdout"] == "begun\ndone\n"
    assert any(m and "starting the client's sandbox pod" in m for _, m in starting), starting
    assert seen and all(m and m.startswith("running") for _, m in seen), seen
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)


async def test_at_max_sessions_an_idle_sessions_pod_is_reclaimed(cluster: Cluster, errlog: IO[str]) -> None:
    """Clients that never send DELETE (the TypeScript SDK's close()) do not use the server up."""
    with http_server(cluster, errlog, "--max-sessions", "1") as (url, _):
        async with http_session(url, terminate_on_close=False) as first:
            one = structured(await first.call_tool("upload_file", {"path": "mine.txt", "text": "1"}))
            async with http_session(url, terminate_on_close=False) as second:
                two = structured(await second.call_tool("list_files", {}))
                await anyio.to_thread.run_sync(wait_deleted, cluster, one["pod"])
                back = structured(await first.call_tool("list_files", {}))

    assert two["pod"] != one["pod"] and two["entries"] == []
    assert back["pod"] not in (one["pod"], two["pod"]) and back["entries"] == []
    assert back["notice"] is not None and "reclaimed for another client" in back["notice"]


async def test_without_a_cluster_configured_a_call_fails_at_once_saying_so(
    tmp_path: Path, errlog: IO[str]
) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # what a host gives: no KUBECONFIG
    command = server_command()
    params = StdioServerParameters(command=command[0], args=[*command[1:], "mcp"], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool("run_code", {"language": "sh", "code": "true"})

    assert "no cluster configured: set KUBECONFIG in the server's env" in error_text(result)
    errlog.seek(0)
    log = errlog.read()
    assert "warning: no cluster configured" in log and "Traceback" not in log


def test_a_client_dying_mid_call_leaves_no_traceback_and_no_pod(cluster: Cluster, tmp_path: Path) -> None:
    command = server_command()
    err = tmp_path / "server.err"
    with err.open("w") as errfile:
        proc = subprocess.Popen(
            [*command, "mcp"],
            env=server_env(cluster),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errfile,
        )
        assert proc.stdin is not None and proc.stdout is not None

        def send(message: dict[str, Any]) -> None:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
            proc.stdin.flush()

        hello = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        send({"id": 1, "method": "initialize", "params": hello})
        assert json.loads(proc.stdout.readline())["id"] == 1
        send({"method": "notifications/initialized"})
        code = "import sys, time\nprint('up', flush=True)\ntime.sleep(60)"
        call = {"name": "run_code", "arguments": {"language": "python", "code": code}}
        send({"id": 2, "method": "tools/call", "params": call, "_meta": {}})
        pods: set[str] = set()
        while not pods:  # the run is in flight in its pod
            pods = pod_names(cluster)
        proc.stdout.close()  # the client dies: both pipes go
        proc.stdin.close()
        assert proc.wait(timeout=120) is not None

    log = err.read_text()
    assert "Traceback" not in log, log
    for name in pods:
        wait_deleted(cluster, name)


# -- the example ------------------------------------------------------------------------------------


def test_the_example_client_runs_and_leaves_no_pod(cluster: Cluster) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "mcp_client.py"
    env = {**os.environ, **server_env(cluster)}
    env.pop("KX_USE_EMULATOR", None)
    if cluster.kubeconfig:
        env["KUBECONFIG"] = cluster.kubeconfig  # the example uses kubectl's current context

    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, env=env, timeout=240, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("pod deleted.")
    assert "binary round trip of 256 bytes: identical" in done.stdout
    assert pod_names(cluster) == set()
