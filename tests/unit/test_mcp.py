"""MCP server unit tests: the tool functions on a fake sandbox, clients, and the SDK's own client
in memory. The fake sandbox (kx_mcp_fakes.py, typed against :class:`Sandbox`) stands for the
executor's public API; its "pod" is a local directory where the server's fixed in-pod scripts run
under the host's /bin/sh, so the listing and run-file scripts are tested for real. No network, no
cluster, no clock waits."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install 'kubectl-executor[mcp]'")

import anyio
import pydantic_core
from click.testing import CliRunner
from kx_mcp_fakes import FakeSandbox, as_sandbox
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import EmbeddedResource, TextContent

from kubectl_executor import cli as cli_module
from kubectl_executor.boundary import ClusterAccess, ToolCallResult, ToolCommandLineCodeResult, ToolError
from kubectl_executor.cli import mcp as cli_mcp
from kubectl_executor.errors import (
    InvalidInputError,
    NotFoundError,
    OutcomeUnknownError,
    PodStartError,
    TransferError,
)
from kubectl_executor.executor import SCRATCH_STEM, BlockResult
from kubectl_executor.mcp import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_RUN_TIMEOUT,
    ClientRegistry,
    KubectlExecutorMcp,
    McpConfig,
    RefusedError,
    Sandbox,
    Workspace,
    models,
    response_budget,
    tools,
)
from kubectl_executor.mcp import server as server_module
from kubectl_executor.mcp.server import _fit, _McpSessionEndWatcher, _only_client_gone, cluster_problem

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

_names = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_fake(tmp_path: Path) -> Callable[..., FakeSandbox]:
    def make(**kwargs: Any) -> FakeSandbox:
        return FakeSandbox(tmp_path / f"pod{next(_names)}", **kwargs)

    return make


@pytest.fixture
def fake(make_fake: Callable[..., FakeSandbox]) -> FakeSandbox:
    sb = make_fake()
    sb.start()
    return sb


# -- the tool functions ----------------------------------------------------------------------------


def test_run_code_exit_codes_are_results_and_no_file_is_kept(fake: FakeSandbox) -> None:
    ok = tools.run_code(as_sandbox(fake), "python", "print('hi')", 30)
    failed = tools.run_code(
        as_sandbox(fake), "python", "import sys\nprint('no', file=sys.stderr)\nsys.exit(3)", 30
    )

    assert (ok.exit_code, ok.stdout, ok.file, ok.pod) == (0, "hi\n", None, fake.pod_name)
    assert (failed.exit_code, failed.stderr) == (3, "no\n")
    assert fake.runs[-1]["timeout"] == 30
    assert sorted(p.name for p in fake.root.iterdir()) == [f"{SCRATCH_STEM}.py"]  # hidden, replaced each run


def test_run_code_keeps_the_file_its_first_line_names(fake: FakeSandbox) -> None:
    result = tools.run_code(as_sandbox(fake), "sh", "# filename: job.sh\necho ran", 30)

    assert result.file == f"{fake.root}/job.sh" and result.stdout == "ran\n"
    assert (fake.root / "job.sh").exists()


def test_timed_out_and_save_only_results(fake: FakeSandbox) -> None:
    fake.results.append(BlockResult(124, "started\n", "", timed_out=True))
    fake.results.append(
        BlockResult(0, "Code saved to /w/tmp_code_x.html\n", "", file="/w/tmp_code_x.html", executed=False)
    )

    slow = tools.run_code(as_sandbox(fake), "python", "import time; time.sleep(99)", 1)
    saved = tools.run_code(as_sandbox(fake), "html", "<p>hi</p>", 30)

    assert (slow.exit_code, slow.timed_out) == (124, True)
    assert models.render_run(slow).startswith("exit code 124 (timed out)")
    assert (saved.file, saved.stdout) == ("/w/tmp_code_x.html", "Code saved to /w/tmp_code_x.html\n")


def test_truncation_note_names_the_cap_and_the_log(make_fake: Callable[..., FakeSandbox]) -> None:
    sb = make_fake(budget=1024)
    sb.start()
    result = tools.run_code(as_sandbox(sb), "python", "print('x' * 5000)", 30)

    assert result.truncated and len(result.stdout) < 1200
    assert result.truncation_note is not None
    assert (
        "1024 bytes per stream" in result.truncation_note and "/tmp/kx-logs/n.out" in result.truncation_note
    )
    assert "note: output over 1024 bytes" in models.render_run(result)


def test_run_file_runs_the_existing_file_by_extension(fake: FakeSandbox) -> None:
    (fake.root / "pkg").mkdir()
    (fake.root / "pkg" / "job.py").write_text("import os\nprint(os.getcwd())\n")

    result = tools.run_file(as_sandbox(fake), "pkg/job.py", None, 30)

    assert (result.exit_code, result.stdout) == (0, f"{fake.root}\n")
    run = fake.runs[-1]
    assert (run["language"], run["code"]) == (
        "sh",
        tools.RUN_FILE_SCRIPT,
    )  # fixed text; the path is in the env
    assert run["env"] == {"KX_MCP_FILE": f"{fake.root}/pkg/job.py", "KX_MCP_RUNNER": "python"}


def test_run_file_language_override_and_refusals(fake: FakeSandbox) -> None:
    (fake.root / "job.txt").write_text("echo from-sh\n")

    assert tools.run_file(as_sandbox(fake), "job.txt", "sh", 30).stdout == "from-sh\n"
    with pytest.raises(RefusedError, match="from its extension"):
        tools.run_file(as_sandbox(fake), "job.txt", None, 30)
    with pytest.raises(RefusedError, match=r"no such file in the workspace: missing\.py"):
        tools.run_file(as_sandbox(fake), "missing.py", None, 30)
    with pytest.raises(RefusedError, match="cannot run 'cobol' files"):
        tools.run_file(as_sandbox(fake), "job.txt", "cobol", 30)
    with pytest.raises(InvalidInputError, match="escapes the workspace"):
        tools.run_file(as_sandbox(fake), "../x.py", None, 30)


def test_upload_refusals(fake: FakeSandbox) -> None:
    with pytest.raises(RefusedError, match="exactly one"):
        tools.upload_file(as_sandbox(fake), "a", None, None, 100)
    with pytest.raises(RefusedError, match="exactly one"):
        tools.upload_file(as_sandbox(fake), "a", "YQ==", "a", 100)
    with pytest.raises(RefusedError, match="not valid base64"):
        tools.upload_file(as_sandbox(fake), "a", "not base64!", None, 100)
    with pytest.raises(RefusedError, match="over the upload cap of 10 bytes"):
        tools.upload_file(as_sandbox(fake), "a", None, "x" * 11, 10)
    with pytest.raises(RefusedError, match="upload cap of 10 bytes"):
        tools.upload_file(as_sandbox(fake), "a", base64.b64encode(b"x" * 40).decode(), None, 10)


def test_download_refusals(fake: FakeSandbox) -> None:
    (fake.root / "big.bin").write_bytes(b"x" * 100)

    with pytest.raises(RefusedError, match="larger than the server's download cap of 50 bytes"):
        tools.fetch_file(as_sandbox(fake), "big.bin", 50)
    with pytest.raises(RefusedError, match="no such file in the workspace: nope"):
        tools.fetch_file(as_sandbox(fake), "nope", 50)
    copy = tools.fetch_file(as_sandbox(fake), "big.bin", 1000)
    with pytest.raises(RefusedError, match="offset 100 is outside"):
        tools.file_range(copy, 100, None, 1000, "p")
    with pytest.raises(RefusedError, match="length must be >= 1"):
        tools.file_range(copy, 0, 0, 1000, "p")


def ranges(copy: tools.FileCopy, budget: int, length: int | None = None) -> list[tools.Reply]:
    """Every range of ``copy``, following next_offset."""
    out, offset = [], 0
    while True:
        reply = tools.file_range(copy, offset, length, budget, "pod")
        out.append(reply)
        if reply.result.next_offset is None:
            return out
        offset = reply.result.next_offset


def block_bytes(block: TextContent | EmbeddedResource) -> bytes:
    if isinstance(block, TextContent):
        return block.text.encode()
    return base64.b64decode(block.resource.blob)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("all.bin", bytes(range(256)) * 40),
        # multi-byte characters cut at range ends, and control characters that JSON escapes 6-fold
        ("text.txt", ('grüße 🚀 \x01\x02"\\ \n' * 500).encode()),
    ],
)
def test_ranged_downloads_fit_the_budget_and_reassemble(fake: FakeSandbox, name: str, data: bytes) -> None:
    (fake.root / name).write_bytes(data)
    copy = tools.fetch_file(as_sandbox(fake), name, 10**6)
    budget = 6000

    parts = ranges(copy, budget)

    assert len(parts) > 3
    assert b"".join(block_bytes(p.blocks[0]) for p in parts) == data
    for p in parts:
        (block,) = p.blocks  # the bytes travel once: not in the structured result too
        assert not _fit(p, budget).is_error  # the whole response, as sent, fits
        assert len(pydantic_core.to_json(block.model_dump(by_alias=True, exclude_none=True))) <= budget
        assert set(p.result.model_dump()) >= {"offset", "length", "next_offset", "sha256", "encoding"}
        assert p.result.sha256 == hashlib.sha256(data).hexdigest() and p.result.size == len(data)
    assert parts[0].result.encoding == ("base64" if name.endswith(".bin") else "text")
    assert isinstance(parts[0].blocks[0], EmbeddedResource if name.endswith(".bin") else TextContent)


def test_a_range_inside_a_character_is_refused_and_length_is_honoured(fake: FakeSandbox) -> None:
    (fake.root / "u.txt").write_text("ü" * 10)
    copy = tools.fetch_file(as_sandbox(fake), "u.txt", 1000)

    with pytest.raises(RefusedError, match="inside a UTF-8 character"):
        tools.file_range(copy, 1, None, 1000, "p")
    three = tools.file_range(copy, 0, 3, 1000, "p")  # 3 bytes: one and a half characters -> one
    assert (three.result.length, three.result.next_offset, three.blocks[0].text) == (2, 2, "ü")  # type: ignore[union-attr]
    assert "call again with offset=2" in three.text


def test_a_result_over_the_budget_is_a_tool_error_not_a_dropped_mcp_session() -> None:
    result = models.RunResult(exit_code=0, stdout="x" * 5000, stderr="")
    reply = tools.Reply(result, "x" * 5000)

    fits = _fit(reply, 20_000)
    too_big = _fit(reply, 4000)

    assert not fits.is_error and fits.structured_content is not None
    assert too_big.is_error and "over the 4000 bytes" in too_big.content[0].text  # type: ignore[union-attr]


def test_budgets_come_from_the_clients_limits() -> None:
    assert response_budget("stdio") < 10 * 1024 * 1024  # the TypeScript SDK's stdio buffer
    assert response_budget("sse") < 1024 * 1024  # the Python SDK's and fastmcp's SSE event cap
    assert response_budget("json") == response_budget("stdio")
    assert McpConfig().http_transport == "sse" and McpConfig(json_response=True).http_transport == "json"


def test_list_files_runs_the_listing_script_and_hides_the_servers_files(fake: FakeSandbox) -> None:
    (fake.root / "sub" / "deep").mkdir(parents=True)
    (fake.root / "a.txt").write_text("hello")
    (fake.root / "sub" / "b.bin").write_bytes(b"\0" * 7)
    (fake.root / "sub" / "deep" / "c").write_text("")
    (fake.root / "sub" / "link").symlink_to("../a.txt")
    for own in (f"{SCRATCH_STEM}.py", tools.TOOL_RUNNER_FILE, ".kx-logs"):
        (fake.root / own).write_text("")

    flat = tools.list_files(as_sandbox(fake), ".", False, 100)
    deep = tools.list_files(as_sandbox(fake), "sub", True, 100)

    assert [(e.path, e.type, e.size) for e in flat.entries] == [("a.txt", "file", 5), ("sub", "dir", None)]
    assert [(e.path, e.type) for e in deep.entries] == [
        ("b.bin", "file"),
        ("deep", "dir"),
        ("deep/c", "file"),
        ("link", "link"),
    ]
    assert fake.runs[-1]["code"] == tools.LIST_SCRIPT  # fixed text; the path is in the env
    assert fake.runs[-1]["env"]["KX_MCP_DIR"] == f"{fake.root}/sub"
    assert "sub/" in models.render_list(flat)


def test_list_files_caps_the_entries_and_refuses_what_is_not_a_directory(fake: FakeSandbox) -> None:
    for i in range(5):
        (fake.root / f"f{i}").write_text("")
    (fake.root / "a.txt").write_text("x")

    listed = tools.list_files(as_sandbox(fake), ".", False, 3)

    assert len(listed.entries) == 3 and listed.truncated
    with pytest.raises(RefusedError, match="no such directory in the workspace: nope"):
        tools.list_files(as_sandbox(fake), "nope", False, 10)
    with pytest.raises(RefusedError, match=r"not a directory: a\.txt"):
        tools.list_files(as_sandbox(fake), "a.txt", False, 10)
    with pytest.raises(InvalidInputError, match="outside the workspace"):
        tools.list_files(as_sandbox(fake), "/etc", False, 10)


def test_parse_listing_keeps_whole_records_of_a_cut_head() -> None:
    records = b"file\x003\x00a.txt\x00dir\x00\x00sub\x00file\x001\x00long-na"
    cut = records + b"\n[... 100 bytes cut ...]\nrest"

    entries, more = tools.parse_listing(cut, True)

    assert [e.path for e in entries] == ["a.txt", "sub"] and more


def call_reply(**fields: Any) -> ToolCommandLineCodeResult:
    base: dict[str, Any] = {"exit_code": 0, "output": "", "code_file": "/w/r.py", "stdout": "", "stderr": ""}
    return ToolCommandLineCodeResult(**{**base, **fields})


def test_call_function_returns_the_value_and_installs_the_runner_once(fake: FakeSandbox) -> None:
    tool = ToolCallResult(status="returned", value=3, value_is_json=True, stdout="adding\n", stderr="")
    fake.call_replies += [call_reply(tool_result=tool), call_reply(tool_result=tool)]

    first = tools.call_function(as_sandbox(fake), "tools", "add", {"a": 1, "b": 2}, 30, True)
    tools.call_function(as_sandbox(fake), "tools", "add", {"a": 1, "b": 2}, 30, False)

    assert (first.status, first.value, first.stdout) == ("returned", 3, "adding\n")
    assert fake.installs == [("tools", tools.TOOL_RUNNER_FILE)]
    assert fake.calls[0] == ({"a": 1, "b": 2}, "add", "tools", tools.TOOL_RUNNER_FILE, 30)
    assert "returned: 3" in models.render_run(first)


def test_call_function_reports_what_the_function_raised(fake: FakeSandbox) -> None:
    error = ToolError(type="KeyError", message="'x'", traceback="Traceback ...\nKeyError: 'x'")
    tool = ToolCallResult(status="raised", error=error, stdout="", stderr="")
    fake.call_replies.append(call_reply(exit_code=1, tool_result=tool))

    result = tools.call_function(as_sandbox(fake), "tools", "bad", {}, 30, True)

    assert (result.status, result.exit_code) == ("raised", 1)
    assert result.error is not None and result.error.type == "KeyError"
    assert "raised KeyError: 'x'" in models.render_run(result)
    assert "--- traceback ---\nTraceback ...\nKeyError: 'x'" in models.render_run(result)


def test_call_function_reinstalls_a_removed_runner_and_calls_again(fake: FakeSandbox) -> None:
    missing = call_reply(
        exit_code=2, stderr="no tool runner at /w/.kx-tool-runner.py: call install_pod_dispatcher()"
    )
    fake.call_replies += [
        missing,
        call_reply(tool_result=ToolCallResult(status="returned", stdout="", stderr="")),
    ]

    result = tools.call_function(as_sandbox(fake), "tools", "f", {}, 30, False)

    assert result.status == "returned"
    assert fake.installs == [("tools", tools.TOOL_RUNNER_FILE)]
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OutcomeUnknownError("marker lost"), "NOT repeated"),
        (
            PodStartError("kx-1", "ImagePullBackOff", "no such image"),
            "cannot start: ImagePullBackOff: no such image",
        ),
        (InvalidInputError("bad path"), "bad path"),
        (TransferError("checksum mismatch"), "TransferError: checksum mismatch"),
        (RuntimeError("boom"), "internal error (RuntimeError): boom"),
    ],
)
def test_error_messages(error: Exception, expected: str) -> None:
    assert expected in server_module.error_text(error)


def test_config_validation_and_the_default_run_timeout() -> None:
    with pytest.raises(InvalidInputError, match="NetworkPolicy"):
        McpConfig(pool_size=1, executor_kwargs={"network_policy": True})
    with pytest.raises(InvalidInputError, match="'pod_name' is the MCP server's"):
        McpConfig(executor_kwargs={"pod_name": "x"})
    with pytest.raises(InvalidInputError, match="idle_timeout"):
        McpConfig(idle_timeout=-1)
    with pytest.raises(InvalidInputError, match="progress_interval"):
        McpConfig(progress_interval=0)

    assert McpConfig().run_timeout == DEFAULT_RUN_TIMEOUT < 60  # below the TypeScript SDK's request timeout
    assert McpConfig(executor_kwargs={"timeout": 90}).run_timeout == 90


def test_no_cluster_configured_is_known_without_running_kubectl(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)

    assert cluster_problem(ClusterAccess(), {"HOME": str(home)}) == server_module.NO_CLUSTER
    assert cluster_problem(ClusterAccess(), {}) == server_module.NO_CLUSTER
    assert cluster_problem(ClusterAccess(), {"KUBECONFIG": ":"}) == server_module.NO_CLUSTER
    assert cluster_problem(ClusterAccess(), {"KUBECONFIG": "/etc/kube.yaml"}) is None
    assert cluster_problem(ClusterAccess(kubeconfig="/k"), {}) is None
    assert cluster_problem(ClusterAccess(remote_control_plane="https://api"), {}) is None
    assert cluster_problem(ClusterAccess(), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    (home / ".kube" / "config").write_text("apiVersion: v1\n")
    assert cluster_problem(ClusterAccess(), {"HOME": str(home)}) is None


async def test_with_no_cluster_a_call_fails_at_once_and_says_what_to_set() -> None:
    server = KubectlExecutorMcp(McpConfig(), environ={})
    try:
        async with Client(server.mcp, mode="legacy") as client:
            result = await client.call_tool("run_code", {"language": "sh", "code": "true"})
    finally:
        server.close()

    assert result.is_error
    assert "no cluster configured: set KUBECONFIG in the server's env" in result.content[0].text  # type: ignore[union-attr]
    assert len(server.clients) == 0  # no client, no executor, no kubectl


# -- clients ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(make_fake: Callable[..., FakeSandbox], made: list[FakeSandbox], **kwargs: Any) -> ClientRegistry:
    def factory() -> Sandbox:
        sb = make_fake()
        made.append(sb)
        return sb

    kwargs.setdefault("idle_timeout", 60)
    kwargs.setdefault("max_clients", 4)
    return ClientRegistry(factory, **kwargs)


async def test_pod_is_made_lazily_and_once_per_client(make_fake: Callable[..., FakeSandbox]) -> None:
    made: list[FakeSandbox] = []
    reg = registry(make_fake, made)

    ws = reg.acquire("a")
    assert made == []  # a client costs nothing until its first call
    first = await ws.run(lambda w: w.ensure())
    second = await ws.run(lambda w: w.ensure())
    reg.release(ws)

    assert first is second is made[0] and made[0].started
    reg.close_all()
    assert made[0].stopped.is_set()


def test_at_max_clients_the_least_recently_used_idle_pod_is_reclaimed(
    make_fake: Callable[..., FakeSandbox],
) -> None:
    made: list[FakeSandbox] = []
    clock = Clock()
    reg = registry(make_fake, made, clock=clock, max_clients=2)
    old, recent = reg.acquire("old"), reg.acquire("recent")
    old.ensure()
    recent.ensure()
    reg.release(old)
    clock.now += 1
    reg.release(recent)

    new = reg.acquire("new")  # a third client: the idle one used least recently gives up its pod

    assert made[0].stopped.wait(10) and not made[1].stopped.is_set()
    assert reg.get("old") is None and reg.get("recent") is recent and reg.get("new") is new
    assert new.notice is None
    reg.release(new)
    clock.now += 1
    reg.release(reg.acquire("recent"))
    clock.now += 1
    back = reg.acquire("old")  # it comes back: told, and (on its first call) a fresh pod
    assert back.notice is not None and "reclaimed for another client" in back.notice
    assert reg.get("new") is None  # now the least recently used idle one
    reg.close_all()


def test_when_every_client_is_busy_a_new_one_is_refused(make_fake: Callable[..., FakeSandbox]) -> None:
    reg = registry(make_fake, [], max_clients=1)
    reg.acquire("busy")

    with pytest.raises(RefusedError, match="all 1 MCP clients with a pod are busy"):
        reg.acquire("other")
    reg.close_all()


def test_idle_clients_are_reaped_busy_ones_are_not(make_fake: Callable[..., FakeSandbox]) -> None:
    made: list[FakeSandbox] = []
    clock = Clock()
    reg = registry(make_fake, made, clock=clock, idle_timeout=60)
    idle, busy = reg.acquire("idle"), reg.acquire("busy")
    idle.ensure()
    busy.ensure()
    reg.release(idle)

    clock.now += 59
    assert reg.reap() == []
    clock.now += 1
    assert reg.reap() == ["idle"]

    assert made[0].stopped.is_set() and not made[1].stopped.is_set()
    assert reg.get("idle") is None and reg.get("busy") is busy
    again = reg.acquire("idle")  # the same MCP session comes back: a fresh pod, and it is told
    assert again is not idle
    assert again.notice is not None and "idle for more than 60s" in again.notice
    reg.close_all()


def test_idle_timeout_zero_never_reaps(make_fake: Callable[..., FakeSandbox]) -> None:
    clock = Clock()
    reg = registry(make_fake, [], clock=clock, idle_timeout=0)
    reg.release(reg.acquire("a"))
    clock.now += 10**9

    assert reg.reap() == []
    reg.close_all()


def test_the_reaper_thread_reaps_on_its_own(make_fake: Callable[..., FakeSandbox]) -> None:
    made: list[FakeSandbox] = []
    clock = Clock()
    rounds: list[float] = []

    def wait(seconds: float) -> bool:  # one round of the reaper per call, an hour later each time
        rounds.append(seconds)
        clock.now += 3600
        return len(rounds) > 1

    reg = registry(make_fake, made, clock=clock, idle_timeout=60, wait=wait)
    ws = reg.acquire("a")
    ws.ensure()
    reg.release(ws)

    reg.start_reaper()

    assert made[0].stopped.wait(10)
    reg.close_all()
    assert reg.get("a") is None and rounds[0] == 15.0


def test_end_of_a_client_deletes_the_pod_even_with_a_run_in_flight(
    make_fake: Callable[..., FakeSandbox],
) -> None:
    made: list[FakeSandbox] = []
    reg = registry(make_fake, made)
    ws = reg.acquire("a")
    sb = ws.ensure()
    made[0].hold = threading.Event()
    worker = threading.Thread(target=lambda: tools.run_code(sb, "sh", "true", 30))
    worker.start()
    assert made[0].running.wait(10)

    reg.end("a", wait=True)

    assert made[0].stopped.is_set()
    worker.join(10)
    with pytest.raises(RefusedError, match="MCP session has ended"):
        ws.ensure()


def test_a_start_failure_leaves_no_sandbox_behind(make_fake: Callable[..., FakeSandbox]) -> None:
    made: list[FakeSandbox] = []

    def factory() -> Sandbox:
        sb = make_fake()
        sb.start_error = PodStartError("kx-x", "ErrImagePull", "no such image")
        made.append(sb)
        return sb

    ws = Workspace("a", factory)
    with pytest.raises(PodStartError):
        ws.ensure()

    assert made[0].stopped.is_set() and ws.pod_name is None


async def test_a_cancelled_call_stops_the_run_in_the_pod(make_fake: Callable[..., FakeSandbox]) -> None:
    made: list[FakeSandbox] = []
    reg = registry(make_fake, made)
    ws = reg.acquire("a")
    await ws.run(lambda w: w.ensure())
    made[0].hold = threading.Event()

    async with anyio.create_task_group() as tg:

        async def call() -> None:
            await ws.run(lambda w: tools.run_code(w.ensure(), "sh", "true", 30))

        tg.start_soon(call)
        await anyio.to_thread.run_sync(made[0].running.wait, 10)
        tg.cancel_scope.cancel()

    assert await anyio.to_thread.run_sync(made[0].cancelled.wait, 10)
    reg.close_all()


async def test_one_client_blocking_does_not_block_another(make_fake: Callable[..., FakeSandbox]) -> None:
    made: list[FakeSandbox] = []
    reg = registry(make_fake, made)
    slow, fast = reg.acquire("slow"), reg.acquire("fast")
    await slow.run(lambda w: w.ensure())
    hold = made[0].hold = threading.Event()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow.run, lambda w: tools.run_code(w.ensure(), "sh", "true", 30))
        await anyio.to_thread.run_sync(made[0].running.wait, 10)
        quick = await fast.run(lambda w: tools.run_code(w.ensure(), "sh", "echo quick", 30))
        assert quick.stdout == "quick\n"
        assert not hold.is_set()  # the slow run was still in flight
        hold.set()
    reg.close_all()


async def test_a_call_into_an_ended_client_is_a_tool_error(make_fake: Callable[..., FakeSandbox]) -> None:
    reg = registry(make_fake, [])
    ws = reg.acquire("a")
    reg.end("a", wait=True)

    with pytest.raises(RefusedError, match="MCP session has ended"):
        await ws.run(lambda w: w.ensure())


def test_building_the_server_leaves_logging_alone() -> None:
    import logging

    root = logging.getLogger()
    before = (list(root.handlers), root.level)

    KubectlExecutorMcp().close()

    assert (list(root.handlers), root.level) == before


# -- the server through the SDK's client (in memory) ---------------------------------------------


@pytest.fixture
def server_and_pods(
    make_fake: Callable[..., FakeSandbox],
) -> Iterator[tuple[KubectlExecutorMcp, list[FakeSandbox]]]:
    made: list[FakeSandbox] = []

    def factory() -> Sandbox:
        sb = make_fake()
        made.append(sb)
        return sb

    config = McpConfig(
        max_file_bytes=4096, max_timeout=100, executor_kwargs={"timeout": 7}, progress_interval=0.01
    )
    server = KubectlExecutorMcp(config, executor_factory=factory)
    yield server, made
    server.close()


async def test_tools_their_schemas_titles_and_descriptions(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeSandbox]],
) -> None:
    server, made = server_and_pods
    async with Client(server.mcp, mode="legacy") as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}

    assert set(listed) == {
        "run_code",
        "run_file",
        "upload_file",
        "download_file",
        "call_function",
        "list_files",
        "reset_workspace",
    }
    for tool in listed.values():
        assert tool.title and tool.description
        assert "\n" not in tool.description and "  " not in tool.description  # no docstring indentation
    run = listed["run_code"]
    assert "default timeout is 7 s" in str(run.description)
    assert f"{DEFAULT_MAX_OUTPUT_BYTES // 1024} KiB per stream" in str(run.description)
    assert "progress" in str(run.description)
    assert run.input_schema["required"] == ["language", "code"]
    assert run.input_schema["properties"]["timeout"]["description"].startswith("seconds before")
    assert {"exit_code", "stdout", "stderr", "timed_out", "truncation_note"} <= set(
        run.output_schema["properties"]
    )
    assert {"content_base64", "text"} <= set(listed["upload_file"].input_schema["properties"])
    assert {"offset", "length"} <= set(listed["download_file"].input_schema["properties"])
    assert "content_base64" not in listed["download_file"].output_schema["properties"]  # the bytes come once
    assert {"status", "value", "error"} <= set(listed["call_function"].output_schema["properties"])
    annotations = listed["download_file"].annotations
    assert annotations is not None and annotations.read_only_hint
    assert made == []  # listing tools makes no pod


async def test_calls_through_the_client(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeSandbox]],
) -> None:
    server, made = server_and_pods
    async with Client(server.mcp, mode="legacy") as client:
        three = await client.call_tool(
            "run_code", {"language": "python", "code": "import sys; print(1); sys.exit(3)"}
        )
        quick = await client.call_tool("run_code", {"language": "sh", "code": "echo hi", "timeout": 5})
        too_long = await client.call_tool("run_code", {"language": "sh", "code": "true", "timeout": 101})
        cobol = await client.call_tool("run_code", {"language": "cobol", "code": "x"})
        bad = await client.call_tool("upload_file", {"path": "../x", "text": "a"})
        up = await client.call_tool("upload_file", {"path": "d/x.txt", "text": "hello"})
        listing = await client.call_tool("list_files", {"path": "d"})
        root = await client.call_tool("list_files", {})
        reset = await client.call_tool("reset_workspace", {})
        after = await client.call_tool("list_files", {})

    assert not three.is_error
    assert three.structured_content is not None and three.structured_content["exit_code"] == 3
    assert three.content[0].text.startswith("exit code 3")  # type: ignore[union-attr]
    assert made[0].runs[0]["timeout"] == 7  # the server's default
    assert quick.structured_content is not None and made[0].runs[1]["timeout"] == 5
    assert too_long.is_error and "between 1 and 100 seconds" in too_long.content[0].text  # type: ignore[union-attr]
    assert cobol.is_error and "unsupported language 'cobol'" in cobol.content[0].text  # type: ignore[union-attr]
    assert bad.is_error and "escapes the workspace" in bad.content[0].text  # type: ignore[union-attr]
    assert up.structured_content is not None and up.structured_content["size"] == 5
    assert listing.structured_content is not None
    assert [e["path"] for e in listing.structured_content["entries"]] == ["x.txt"]
    assert root.structured_content is not None
    assert [e["path"] for e in root.structured_content["entries"]] == ["d"]  # no scratch files of the runs
    assert (
        reset.structured_content is not None and reset.structured_content["deleted_pod"] == made[0].pod_name
    )
    assert made[0].stopped.is_set()
    assert after.structured_content is not None and after.structured_content["entries"] == []
    assert after.structured_content["pod"] == made[1].pod_name  # a fresh pod after the reset
    assert made[1].stopped.is_set()  # the MCP session ended with the client: its pod is gone


async def test_downloads_through_the_client_carry_the_bytes_once(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeSandbox]],
) -> None:
    server, _ = server_and_pods
    data = bytes(range(256)) * 4
    async with Client(server.mcp, mode="legacy") as client:
        await client.call_tool(
            "upload_file", {"path": "b.bin", "content_base64": base64.b64encode(data).decode()}
        )
        await client.call_tool("upload_file", {"path": "t.txt", "text": "grüße\n"})
        binary = await client.call_tool("download_file", {"path": "b.bin"})
        text = await client.call_tool("download_file", {"path": "t.txt"})
        tail = await client.call_tool("download_file", {"path": "b.bin", "offset": 1000})
        missing = await client.call_tool("download_file", {"path": "nope"})

    assert binary.structured_content is not None and text.structured_content is not None
    assert (
        binary.structured_content["encoding"] == "base64" and binary.structured_content["next_offset"] is None
    )
    (summary, blob) = binary.content
    assert isinstance(blob, EmbeddedResource) and base64.b64decode(blob.resource.blob) == data  # type: ignore[union-attr]
    assert "b.bin: bytes 0-1024 of 1024" in summary.text  # type: ignore[union-attr]
    assert text.content[1].text == "grüße\n"  # type: ignore[union-attr]
    assert str(data[:32]) not in json.dumps(binary.structured_content)
    assert tail.structured_content is not None and tail.structured_content["length"] == 24
    assert missing.is_error and "no such file in the workspace: nope" in missing.content[0].text  # type: ignore[union-attr]


async def test_progress_is_reported_while_a_run_goes_on(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeSandbox]],
) -> None:
    server, made = server_and_pods
    seen: list[tuple[float, str | None]] = []
    async with Client(server.mcp, mode="legacy") as client:
        await client.call_tool("run_code", {"language": "sh", "code": "true"})  # the pod is up
        made[0].hold = hold = threading.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append((value, message))
            if len(seen) >= 2:
                hold.set()  # the run ends only once progress has been reported

        result = await client.call_tool(
            "run_code", {"language": "sh", "code": "echo done"}, progress_callback=progress
        )
        quiet = await client.call_tool("run_code", {"language": "sh", "code": "true"})

    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["stdout"] == "done\n"
    assert len(seen) >= 2 and seen[0][0] < seen[1][0]  # increasing, as the protocol asks
    assert seen[0][1] is not None and seen[0][1].startswith("running")
    assert not quiet.is_error


async def test_a_pod_start_is_reported_at_once_not_at_the_next_interval(
    make_fake: Callable[..., FakeSandbox],
) -> None:
    # The interval is long: only a notification sent when the call enters its pod-start phase can
    # reach the client while the pod starts (this start lasts until the client was told).
    told = threading.Event()

    def factory() -> Sandbox:
        sb = make_fake()
        start = sb.start

        def slow_start() -> None:
            told.wait(10)
            start()

        setattr(sb, "start", slow_start)  # noqa: B010 (an instance's method, replaced for this test)
        return sb

    server = KubectlExecutorMcp(McpConfig(progress_interval=60), executor_factory=factory)
    seen: list[str | None] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(message)
        if message and message.startswith("starting the client's sandbox pod"):
            told.set()

    try:
        async with Client(server.mcp, mode="legacy") as client:
            result = await client.call_tool(
                "run_code", {"language": "sh", "code": "true"}, progress_callback=progress
            )
    finally:
        server.close()
    assert told.is_set(), seen
    assert not result.is_error


async def test_cluster_errors_are_tool_errors_and_the_server_keeps_serving(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeSandbox]],
) -> None:
    server, made = server_and_pods
    async with Client(server.mcp, mode="legacy") as client:
        await client.call_tool("run_code", {"language": "sh", "code": "true"})
        made[0].run_error = OutcomeUnknownError("the stream dropped")
        lost = await client.call_tool("run_code", {"language": "sh", "code": "true"})
        made[0].run_error = NotFoundError(["kubectl", "exec"], 1, 'pods "kx" not found', "pods kx not found")
        gone = await client.call_tool("run_code", {"language": "sh", "code": "true"})
        fresh = await client.call_tool("run_code", {"language": "sh", "code": "echo again"})

    assert lost.is_error and "NOT repeated" in lost.content[0].text  # type: ignore[union-attr]
    assert gone.is_error and "next call starts a fresh pod" in gone.content[0].text  # type: ignore[union-attr]
    assert made[0].stopped.is_set()
    assert fresh.structured_content is not None and fresh.structured_content["stdout"] == "again\n"
    assert fresh.structured_content["pod"] == made[1].pod_name


async def test_a_pod_that_cannot_start_is_a_tool_error(make_fake: Callable[..., FakeSandbox]) -> None:
    def factory() -> Sandbox:
        sb = make_fake()
        sb.start_error = PodStartError("kx-1", "ErrImagePull", "image nope:1 not found")
        return sb

    server = KubectlExecutorMcp(executor_factory=factory)
    try:
        async with Client(server.mcp, mode="legacy") as client:
            result = await client.call_tool("run_code", {"language": "sh", "code": "true"})
    finally:
        server.close()

    assert result.is_error
    assert "the sandbox pod cannot start: ErrImagePull: image nope:1 not found" in result.content[0].text  # type: ignore[union-attr]


def test_client_keys_stdio_and_http() -> None:
    class Request:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    def ctx(request: object) -> Any:
        class RequestContext:
            pass

        class Ctx:
            request_context = RequestContext()

        Ctx.request_context.request = request  # type: ignore[attr-defined]
        return Ctx()

    assert server_module.client_key(ctx(None)) == "stdio"
    assert server_module.client_key(ctx(Request({"mcp-session-id": "abc"}))) == "http:abc"
    with pytest.raises(RefusedError, match="no MCP session"):
        server_module.client_key(ctx(Request({})))  # the 2026-07-28 era over HTTP has no MCP sessions
    with pytest.warns(DeprecationWarning, match="use client_key"):
        assert server_module.session_key(ctx(None)) == "stdio"  # its deprecated former name


def test_the_former_session_names_are_deprecated_aliases(make_fake: Callable[..., FakeSandbox]) -> None:
    import kubectl_executor.mcp as package
    from kubectl_executor.mcp import sessions as old_module

    assert (
        package.SessionRegistry is old_module.SessionRegistry
        and package.session_key is server_module.session_key
    )
    assert old_module.Workspace is Workspace
    with pytest.warns(DeprecationWarning, match="use ClientRegistry"):
        reg = package.SessionRegistry(lambda: as_sandbox(make_fake()), idle_timeout=60, max_sessions=3)
    assert isinstance(reg, ClientRegistry) and reg.max_clients == reg.max_sessions == 3
    server = KubectlExecutorMcp(executor_factory=lambda: as_sandbox(make_fake()))
    with pytest.warns(DeprecationWarning, match="use clients"):
        assert server.sessions is server.clients
    server.close()
    with pytest.raises(AttributeError):
        package.NoSuchName  # noqa: B018


async def test_discover_is_refused_over_http_only() -> None:
    class Ctx:
        method = "server/discover"
        request: object | None = object()

    async def call_next(ctx: Any) -> str:
        return "served"

    with pytest.raises(MCPError, match="initialize handshake"):
        await server_module._mcp_sessions_need_handshake(Ctx(), call_next)
    stdio = Ctx()
    stdio.request = None
    assert await server_module._mcp_sessions_need_handshake(stdio, call_next) == "served"


async def test_an_accepted_delete_ends_the_mcp_session() -> None:
    ended: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = 200 if scope["method"] == "DELETE" and scope["path"] == "/mcp" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    watcher = _McpSessionEndWatcher(app, ended.append)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    for method, path in (("DELETE", "/mcp"), ("DELETE", "/other"), ("POST", "/mcp")):
        scope = {"type": "http", "method": method, "path": path, "headers": [(b"mcp-session-id", b"s1")]}
        await watcher(scope, receive, send)

    assert ended == ["s1"]
    assert len(sent) == 6  # every response went through


def test_a_client_gone_is_told_apart_from_a_crash() -> None:
    gone = BaseExceptionGroup(
        "tg", [BrokenPipeError(), BaseExceptionGroup("inner", [anyio.ClosedResourceError()])]
    )

    assert _only_client_gone(gone) and _only_client_gone(anyio.BrokenResourceError())
    assert not _only_client_gone(BaseExceptionGroup("tg", [BrokenPipeError(), RuntimeError("bug")]))
    assert not _only_client_gone(ValueError())


# -- packaging and the command line ----------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_importing_the_library_does_not_import_mcp() -> None:
    done = run_python("import sys, kubectl_executor, kubectl_executor.cli; print('mcp' in sys.modules)")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_without_the_sdk_the_import_error_says_how_to_install_it() -> None:
    done = run_python(
        "import sys\nsys.modules['mcp'] = None\n"
        "try:\n    import kubectl_executor.mcp\nexcept ImportError as e:\n    print(e)\n"
    )

    assert "pip install 'kubectl-executor[mcp]'" in done.stdout, done.stderr


def test_cli_mcp_builds_the_server_from_flags_and_env(
    monkeypatch: pytest.MonkeyPatch, fake_kubectl: str
) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(self: KubectlExecutorMcp) -> None:
        seen["config"] = self.config

    monkeypatch.setattr(KubectlExecutorMcp, "serve_stdio", fake_serve)
    monkeypatch.setattr(cli_mcp, "_close_on_sigterm", lambda close: seen.setdefault("sigterm", close))
    env = {"KUBECTL_EXECUTOR_NAMESPACE": "sandbox", "KUBECTL_EXECUTOR_MCP_POOL_SIZE": "2", "KUBECONFIG": "/k"}
    result = CliRunner().invoke(
        cli_module.cli,
        [
            "mcp",
            *("--kubectl", fake_kubectl, "--image", "python:3.12-slim", "--idle-timeout", "5m"),
            *("--memory-limit", "1Gi", "--env", "A=b", "--no-hardened", "--max-file-bytes", "2048"),
            *("--json-response", "--progress-interval", "2"),
        ],
        env=env,
    )

    assert result.exit_code == 0, result.output
    config: McpConfig = seen["config"]
    assert (config.idle_timeout, config.pool_size, config.max_file_bytes) == (300.0, 2, 2048)
    assert (config.json_response, config.progress_interval) == (True, 2.0)
    assert config.access.namespace == "sandbox" and config.pod.image == "python:3.12-slim"
    assert config.run_options.timeout == DEFAULT_RUN_TIMEOUT  # not given: below the clients' request timeouts
    assert config.pod.resources.memory_limit == "1Gi" and config.pod.hardened is False
    assert config.pod.env == {"A": "b"}
    assert config.run_options.max_output_bytes == DEFAULT_MAX_OUTPUT_BYTES
    assert "network_policy" not in config.executor_kwargs
    assert (
        "kubectl-executor mcp " in result.stderr
        and "pods of python:3.12-slim in namespace sandbox" in result.stderr
    )
    assert "run timeout 45s" in result.stderr and "no cluster configured" not in result.stderr


def test_cli_mcp_warns_at_start_up_when_no_cluster_is_configured(
    monkeypatch: pytest.MonkeyPatch, fake_kubectl: str, tmp_path: Path
) -> None:
    monkeypatch.setattr(KubectlExecutorMcp, "serve_stdio", lambda self: None)
    monkeypatch.setattr(cli_mcp, "_close_on_sigterm", lambda close: None)
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBECTL_EXECUTOR_KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    result = CliRunner().invoke(cli_module.cli, ["mcp", "--kubectl", fake_kubectl, "--timeout", "9"])

    assert result.exit_code == 0, result.output
    assert "warning: no cluster configured: set KUBECONFIG in the server's env" in result.stderr
    assert "run timeout 9s" in result.stderr


def test_cli_mcp_usage_errors_fail_at_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[KubectlExecutorMcp] = []
    monkeypatch.setattr(KubectlExecutorMcp, "serve_stdio", served.append)
    runner = CliRunner()

    both = runner.invoke(cli_module.cli, ["mcp", "--pool-size", "1", "--network-policy"])
    duration = runner.invoke(cli_module.cli, ["mcp", "--idle-timeout", "soon"])
    no_kubectl = runner.invoke(cli_module.cli, ["mcp", "--kubectl", str(tmp_path / "missing")])
    work_dir = runner.invoke(cli_module.cli, ["mcp"], env={"KUBECTL_EXECUTOR_WORK_DIR": "relative/dir"})

    assert both.exit_code == 2 and "NetworkPolicy" in both.output
    assert duration.exit_code != 0 and "not a duration" in duration.output
    assert no_kubectl.exit_code == cli_module.EXIT_KUBECTL_NOT_FOUND, no_kubectl.output
    assert work_dir.exit_code == 2 and "work_dir must be an absolute path" in work_dir.output
    assert served == []


def test_cli_mcp_print_manifest_shows_the_pod_options(fake_kubectl: str) -> None:
    result = CliRunner().invoke(
        cli_module.cli,
        [
            "mcp",
            "--kubectl",
            fake_kubectl,
            "--print-manifest",
            "--runtime-class",
            "gvisor",
            "--cpu-limit",
            "500m",
        ],
    )

    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["spec"]["runtimeClassName"] == "gvisor"
    assert manifest["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"
