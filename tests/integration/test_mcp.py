"""The MCP server through the SDK's own client: the real ``kubectl-executor mcp`` process over stdio
and over streamable HTTP, the real kubectl, the emulator (or a cluster). Cluster access reaches the
server through KUBECTL_EXECUTOR_* variables, the MCP options through flags."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install 'kubectl-executor[mcp]'")

import anyio
from kx_cluster import Cluster
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from kubectl_executor.manifest import OWNER_HOST_LABEL, OWNER_PID_LABEL, SESSION_LABEL, label_safe
from kubectl_executor.pool import POOL_LABEL

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


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("kubectl-executor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kubectl_executor"]


def server_env(cluster: Cluster) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "KUBECONFIG", "LANG") if k in os.environ}
    env.update(cluster.env)
    env["KUBECTL_EXECUTOR_KUBECTL"] = cluster.kubectl
    env["KUBECTL_EXECUTOR_NAMESPACE"] = cluster.namespace
    env["KUBECTL_EXECUTOR_IMAGE"] = cluster.image
    if cluster.kubeconfig:
        env["KUBECTL_EXECUTOR_KUBECONFIG"] = cluster.kubeconfig
    if cluster.context:
        env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
    return env


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


def pod_names(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def wait_deleted(cluster: Cluster, name: str) -> None:
    done = cluster.run(
        "wait", "--for=delete", f"pod/{name}", "-n", cluster.namespace, "--timeout=120s", check=False
    )
    assert done.returncode == 0 or b"not found" in done.stderr, done.stderr


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
        full = structured(await session.call_tool("download_file", {"path": log}))
        assert (full["size"], full["text"]) == (200_000, "x" * 200_000)  # the whole output, kept in the pod
        pod = ok["pod"]
        assert {three["pod"], slow["pod"], shell["pod"]} == {pod}
        assert pod in pod_names(cluster)

    # The client closed stdin: the server deleted the session's pod before it exited.
    assert pod not in pod_names(cluster)


async def test_stdio_files_binary_round_trip_and_function_calls(cluster: Cluster, errlog: IO[str]) -> None:
    data = bytes(range(256)) * 64
    async with stdio_session(cluster, errlog) as session:
        up = structured(
            await session.call_tool(
                "upload_file", {"path": "data/all.bin", "content_base64": base64.b64encode(data).decode()}
            )
        )
        down = structured(await session.call_tool("download_file", {"path": "data/all.bin"}))
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
    assert (down["size"], down["sha256"]) == (len(data), digest)
    assert base64.b64decode(down["content_base64"]) == data
    assert down["text"] is None

    assert (added["status"], added["value"], added["stdout"]) == ("returned", 42, "adding 2 40\n")
    assert cwd["value"] == "/workspace"
    assert (failed["status"], failed["exit_code"]) == ("raised", 1)
    assert failed["error"]["type"] == "KeyError" and "missing" in failed["error"]["message"]

    assert ran["path"] == "/workspace/job.py"
    assert (job["exit_code"], job["stdout"]) == (0, "adding 1 2\n3\n")
    paths = {e["path"]: e for e in listing["entries"]}
    assert paths["data/all.bin"]["size"] == len(data) and paths["data"]["type"] == "dir"
    assert {"tools.py", "job.py"} <= set(paths)
    assert not any(p.startswith(".kx-") for p in paths)  # the server's helpers are not the model's business
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
        [*server_command(), "gc", "--session", labels[SESSION_LABEL], "-o", "json"],
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


@contextlib.contextmanager
def http_server(
    cluster: Cluster, errlog: IO[str], *flags: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The server on a free port; yields its URL (from the line it prints on stderr)."""
    proc = subprocess.Popen(
        [*server_command(), "mcp", "--transport", "http", "--port", "0", *flags],
        env=server_env(cluster),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            errlog.write(line)
            if "serving streamable HTTP on " in line:
                url = line.rsplit(" ", 1)[1].strip()
                break
        assert url, "the server did not start"
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rest = proc.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[1]
        errlog.write(rest or "")


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
