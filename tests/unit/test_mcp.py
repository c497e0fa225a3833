"""MCP server unit tests: the tool functions on a fake executor, sessions, and the SDK's own client
in memory. The fake executor's "pod" is a local directory; the server's fixed in-pod scripts run
there under the host's /bin/sh, so the listing and run-file scripts are tested for real."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install 'kubectl-executor[mcp]'")

import anyio
from click.testing import CliRunner
from mcp import Client

from kubectl_executor import cli as cli_module
from kubectl_executor import mcp_server
from kubectl_executor.dispatcher import ToolCallResult, ToolCommandLineCodeResult, ToolError
from kubectl_executor.errors import (
    InvalidInputError,
    NotFoundError,
    OutcomeUnknownError,
    PodStartError,
    RemoteNotFoundError,
    TransferError,
)
from kubectl_executor.languages import DEFAULT_EXECUTION_POLICIES
from kubectl_executor.mcp_server import (
    KubectlExecutorMcp,
    McpConfig,
    SessionRegistry,
    Workspace,
    parse_listing,
)
from kubectl_executor.protocol import ExecResult, OutputBudget, RunRequest
from kubectl_executor.transfer import TransferLimits, pod_relative

pytestmark = pytest.mark.anyio

_names = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeExecutor:
    """Stands in for KubernetesCommandLineCodeExecutor: a local directory is its pod's workspace.

    ``_execute`` writes the request's code there and runs it with the host's interpreter (env and
    timeout as asked); ``hold`` keeps a run in flight until it is set (or the run is cancelled)."""

    def __init__(self, root: Path, *, timeout: int = 60, budget: int = 64 * 1024) -> None:
        self.root = root
        self.work_dir = root
        self.pod_name = f"kx-fake{next(_names)}"
        self.timeout = timeout
        self.execution_policies = dict(DEFAULT_EXECUTION_POLICIES)
        self._max_output_bytes = budget
        self._extra_env: dict[str, str] = {"FROM_EXECUTOR": "yes"}
        self.start_error: BaseException | None = None
        self.execute_error: BaseException | None = None
        self.started = False
        self.stopped = threading.Event()
        self.cancelled = threading.Event()
        self.running = threading.Event()
        self.hold: threading.Event | None = None
        self.requests: list[RunRequest] = []
        self.installs: list[tuple[str, str]] = []
        self.calls: list[tuple[dict[str, Any], str, str | None, str, float | None]] = []
        self.call_replies: list[ToolCommandLineCodeResult] = []

    # lifecycle
    def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.root.mkdir(parents=True, exist_ok=True)
        self.started = True

    def stop(self) -> None:
        self.stopped.set()
        if self.hold is not None:
            self.hold.set()

    def cancel(self) -> bool:
        self.cancelled.set()
        if self.hold is not None:
            self.hold.set()
        return True

    # running
    def _execute(self, request: RunRequest, callback: Any) -> ExecResult:
        self.requests.append(request)
        self.running.set()
        if self.hold is not None:
            self.hold.wait(30)
        if self.execute_error is not None:
            raise self.execute_error
        path = self.root / request.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(request.code)
        if request.runner is None:
            return ExecResult(0, b"", b"", False, False, [])
        interpreter = {"python": [sys.executable], "sh": ["sh"], "bash": ["bash"]}[request.runner]
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            **request.env,
        }
        try:
            done = subprocess.run(
                [*interpreter, str(path)],
                cwd=self.root,
                env=env,
                capture_output=True,
                timeout=request.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return ExecResult(124, exc.stdout or b"", exc.stderr or b"", True, False, [])
        out, err = OutputBudget(self._max_output_bytes), OutputBudget(self._max_output_bytes)
        out(done.stdout)
        err(done.stderr)
        note = "full output in the pod at /tmp/kx-logs/n.*"
        logs = ["/tmp/kx-logs/n.out", "/tmp/kx-logs/n.err"] if out.truncated or err.truncated else []
        return ExecResult(
            done.returncode, out.value(note), err.value(note), False, out.truncated or err.truncated, logs
        )

    # files
    def upload_file_content(self, path: str, content: bytes | str, *, timeout: float | None = None) -> str:
        _, rel = pod_relative(path, [str(self.root)])
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return f"{self.root}/{rel}"

    def download_file(self, remote: str, local: Path, *, limits: TransferLimits | None = None) -> Path:
        _, rel = pod_relative(remote, [str(self.root), "/tmp/kx-logs"])
        source = self.root / rel
        if not source.exists():
            raise RemoteNotFoundError(f"{rel!r} does not exist in pod {self.pod_name}")
        if not source.is_file():
            raise TransferError(f"{rel!r} is not a regular file")
        if limits is not None and source.stat().st_size > limits.max_total_bytes:
            raise TransferError(f"the download exceeds {limits.max_total_bytes} bytes")
        shutil.copyfile(source, local)
        return local

    # tool functions
    def install_pod_dispatcher(self, *, default_module: str, runner_filename: str) -> str:
        self.installs.append((default_module, runner_filename))
        return f"{self.root}/{runner_filename}"

    def execute_tool_function(
        self,
        arguments: dict[str, Any],
        func_name: str,
        *,
        module: str | None = None,
        runner_script: str = "executor.py",
        timeout: float | None = None,
    ) -> ToolCommandLineCodeResult:
        self.calls.append((arguments, func_name, module, runner_script, timeout))
        return self.call_replies.pop(0)


@pytest.fixture
def make_fake(tmp_path: Path) -> Callable[..., FakeExecutor]:
    def make(**kwargs: Any) -> FakeExecutor:
        return FakeExecutor(tmp_path / f"pod{next(_names)}", **kwargs)

    return make


@pytest.fixture
def fake(make_fake: Callable[..., FakeExecutor]) -> FakeExecutor:
    ex = make_fake()
    ex.start()
    return ex


def as_executor(ex: FakeExecutor) -> Any:
    return ex


# -- the tool functions --------------------------------------------------------------------------


def test_run_code_exit_codes_are_results(fake: FakeExecutor) -> None:
    ok = mcp_server.run_code(as_executor(fake), "python", "print('hi')", 30)
    failed = mcp_server.run_code(
        as_executor(fake), "Python", "import sys\nprint('x', file=sys.stderr)\nsys.exit(3)", 30
    )

    assert (ok.exit_code, ok.stdout, ok.stderr, ok.timed_out) == (0, "hi\n", "", False)
    assert (failed.exit_code, failed.stderr) == (3, "x\n")
    assert ok.pod == fake.pod_name
    assert ok.file is not None and ok.file.startswith(f"{fake.root}/tmp_code_") and ok.file.endswith(".py")
    assert fake.requests[-1].timeout == 30.0
    assert fake.requests[-1].env == {"FROM_EXECUTOR": "yes"}  # the executor's env travels with every run


def test_run_code_filename_hint_and_shell(fake: FakeExecutor) -> None:
    result = mcp_server.run_code(
        as_executor(fake), "bash", "# filename: scripts/hello.sh\necho $((6 * 7))", 30
    )

    assert result.stdout == "42\n"
    assert result.file == f"{fake.root}/scripts/hello.sh"
    assert (fake.root / "scripts/hello.sh").exists()


def test_run_code_quiets_pip_in_shell_blocks(fake: FakeExecutor) -> None:
    mcp_server.run_code(as_executor(fake), "sh", "pip install requests >/dev/null 2>&1 || true", 30)

    assert b"pip install -qqq requests" in fake.requests[-1].code


def test_run_code_timeout_is_124_with_timed_out(fake: FakeExecutor) -> None:
    result = mcp_server.run_code(as_executor(fake), "python", "import time\ntime.sleep(30)", 1)

    assert (result.exit_code, result.timed_out) == (124, True)
    assert "(timed out)" in mcp_server.render_run(result)


def test_run_code_save_only_languages(fake: FakeExecutor) -> None:
    result = mcp_server.run_code(as_executor(fake), "html", "<p>hi</p>", 30)

    assert result.exit_code == 0
    assert result.stdout.startswith("Code saved to ")
    assert fake.requests[-1].runner is None


def test_run_code_refuses_unknown_language_and_bad_file_names(fake: FakeExecutor) -> None:
    with pytest.raises(mcp_server.ToolError, match="unsupported language 'cobol'"):
        mcp_server.run_code(as_executor(fake), "cobol", "DISPLAY 'HI'.", 30)
    with pytest.raises(InvalidInputError, match="escapes"):
        mcp_server.run_code(as_executor(fake), "python", "# filename: ../evil.py\nprint(1)", 30)
    assert fake.requests == []


def test_truncation_note_names_the_budget_and_the_log(make_fake: Callable[..., FakeExecutor]) -> None:
    ex = make_fake(budget=1024)
    ex.start()

    result = mcp_server.run_code(as_executor(ex), "python", "print('x' * 5000)", 30)

    assert result.truncated
    assert result.truncation_note is not None
    assert "1024 bytes" in result.truncation_note and "/tmp/kx-logs/n.out" in result.truncation_note
    assert "bytes omitted" in result.stdout
    assert "note: output over 1024 bytes" in mcp_server.render_run(result)


def test_run_file_runs_the_existing_file_by_extension(fake: FakeExecutor) -> None:
    fake.upload_file_content("pkg/job.py", b"import sys\nprint('job', sys.argv[0])\nsys.exit(5)\n")

    result = mcp_server.run_file(as_executor(fake), "pkg/job.py", None, 30)

    assert result.exit_code == 5
    assert result.stdout == f"job {fake.root}/pkg/job.py\n"
    assert result.file == f"{fake.root}/pkg/job.py"
    request = fake.requests[-1]
    assert request.runner == "sh" and request.code == mcp_server.RUN_FILE_SCRIPT.encode()  # fixed text
    assert request.env["KX_MCP_FILE"] == f"{fake.root}/pkg/job.py"
    assert (fake.root / "pkg/job.py").read_bytes().startswith(b"import sys")  # not rewritten


def test_run_file_language_override_and_refusals(fake: FakeExecutor) -> None:
    fake.upload_file_content("job.txt", b"echo from-sh\n")

    assert mcp_server.run_file(as_executor(fake), "job.txt", "sh", 30).stdout == "from-sh\n"
    with pytest.raises(mcp_server.ToolError, match="from its extension"):
        mcp_server.run_file(as_executor(fake), "job.txt", None, 30)
    with pytest.raises(mcp_server.ToolError, match=r"no such file in the workspace: missing\.py"):
        mcp_server.run_file(as_executor(fake), "missing.py", None, 30)
    with pytest.raises(InvalidInputError, match="escapes"):
        mcp_server.run_file(as_executor(fake), "../x.py", None, 30)


def test_upload_download_round_trip_of_every_byte_value(fake: FakeExecutor) -> None:
    data = bytes(range(256)) * 4
    up = mcp_server.upload_file(
        as_executor(fake), "bin/all.bin", base64.b64encode(data).decode(), None, 10_000
    )
    down = mcp_server.download_file(as_executor(fake), "bin/all.bin", 10_000)

    assert up.size == down.size == len(data)
    assert up.sha256 == down.sha256 == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(down.content_base64) == data
    assert down.text is None  # not UTF-8
    assert "binary content" in mcp_server.render_download(down)


def test_upload_text_and_download_text(fake: FakeExecutor) -> None:
    mcp_server.upload_file(as_executor(fake), "notes/ü.txt", None, "grüße\n", 1000)

    down = mcp_server.download_file(as_executor(fake), "notes/ü.txt", 1000)

    assert down.text == "grüße\n"
    assert down.path == f"{fake.root}/notes/ü.txt"


def test_upload_refusals(fake: FakeExecutor) -> None:
    with pytest.raises(mcp_server.ToolError, match="exactly one"):
        mcp_server.upload_file(as_executor(fake), "a", None, None, 100)
    with pytest.raises(mcp_server.ToolError, match="exactly one"):
        mcp_server.upload_file(as_executor(fake), "a", "YQ==", "a", 100)
    with pytest.raises(mcp_server.ToolError, match="not valid base64"):
        mcp_server.upload_file(as_executor(fake), "a", "not base64!", None, 100)
    with pytest.raises(mcp_server.ToolError, match="over the upload cap of 10 bytes"):
        mcp_server.upload_file(as_executor(fake), "a", None, "x" * 11, 10)
    with pytest.raises(mcp_server.ToolError, match="upload cap of 10 bytes"):
        mcp_server.upload_file(as_executor(fake), "a", base64.b64encode(b"x" * 40).decode(), None, 10)
    assert not (fake.root / "a").exists()


def test_download_refusals(fake: FakeExecutor) -> None:
    fake.upload_file_content("big.bin", b"x" * 100)

    with pytest.raises(mcp_server.ToolError, match="larger than the download cap of 50 bytes"):
        mcp_server.download_file(as_executor(fake), "big.bin", 50)
    with pytest.raises(mcp_server.ToolError, match="no such file in the workspace: nope"):
        mcp_server.download_file(as_executor(fake), "nope", 50)


def test_list_files_runs_the_listing_script(fake: FakeExecutor) -> None:
    fake.upload_file_content("a.txt", b"12345")
    fake.upload_file_content("sub/b.py", b"x")
    fake.upload_file_content("sub/deeper/c.txt", b"abc")
    fake.upload_file_content("name with spaces.txt", b"")
    os.symlink("a.txt", fake.root / "link")
    (fake.root / ".kx-mcp").mkdir()
    (fake.root / ".kx-tool-runner.py").write_text("")

    flat = mcp_server.list_files(as_executor(fake), ".", False, 100)
    deep = mcp_server.list_files(as_executor(fake), "sub", True, 100)

    assert [(e.path, e.type, e.size) for e in flat.entries] == [
        ("a.txt", "file", 5),
        ("link", "link", None),
        ("name with spaces.txt", "file", 0),
        ("sub", "dir", None),
    ]
    assert [e.path for e in deep.entries] == ["b.py", "deeper", "deeper/c.txt"]
    assert not flat.truncated
    assert fake.requests[-1].code == mcp_server.LIST_SCRIPT.encode()  # fixed text; the path is in the env
    assert fake.requests[-1].env["KX_MCP_DIR"] == f"{fake.root}/sub"
    assert "sub/" in mcp_server.render_list(flat)


def test_list_files_caps_the_entries(fake: FakeExecutor) -> None:
    for i in range(5):
        fake.upload_file_content(f"f{i}", b"")

    listed = mcp_server.list_files(as_executor(fake), ".", False, 3)

    assert len(listed.entries) == 3 and listed.truncated


def test_list_files_refusals(fake: FakeExecutor) -> None:
    fake.upload_file_content("a.txt", b"1")

    with pytest.raises(mcp_server.ToolError, match="no such directory in the workspace: nope"):
        mcp_server.list_files(as_executor(fake), "nope", False, 10)
    with pytest.raises(mcp_server.ToolError, match=r"not a directory: a\.txt"):
        mcp_server.list_files(as_executor(fake), "a.txt", False, 10)
    with pytest.raises(InvalidInputError, match="outside the workspace"):
        mcp_server.list_files(as_executor(fake), "/etc", False, 10)


def test_parse_listing_keeps_whole_records_of_a_cut_head() -> None:
    records = b"".join(b"file\x0012\x00name%d\x00" % i for i in range(10))
    cut = records[:40] + b"\n[... 999 bytes omitted; full output in the pod ...]\n" + records[-20:]

    entries, more = parse_listing(cut, True)

    assert [e.path for e in entries] == ["name0", "name1"]
    assert more


def call_reply(**fields: Any) -> ToolCommandLineCodeResult:
    tool = fields.pop("tool", None)
    base = {"exit_code": 0, "output": "", "stdout": "", "stderr": ""}
    return ToolCommandLineCodeResult(**{**base, **fields}, tool_result=tool)


def test_call_function_returns_the_value_and_installs_the_runner_once(fake: FakeExecutor) -> None:
    value = ToolCallResult(
        module="tools", function="add", status="returned", value=3, value_is_json=True, stdout="adding\n"
    )
    fake.call_replies = [call_reply(stdout="adding\n3\n", tool=value), call_reply(tool=value)]

    first = mcp_server.call_function(as_executor(fake), "tools", "add", {"a": 1, "b": 2}, 30, install=True)
    mcp_server.call_function(as_executor(fake), "tools", "add", {"a": 1, "b": 2}, 30, install=False)

    assert (first.status, first.value, first.stdout, first.exit_code) == ("returned", 3, "adding\n", 0)
    assert fake.installs == [("tools", mcp_server.TOOL_RUNNER_FILE)]
    assert fake.calls[0] == ({"a": 1, "b": 2}, "add", "tools", mcp_server.TOOL_RUNNER_FILE, 30)
    assert "returned: 3" in mcp_server.render_run(first)


def test_call_function_reports_what_the_function_raised(fake: FakeExecutor) -> None:
    raised = ToolCallResult(
        status="raised",
        error=ToolError(type="KeyError", message="'x'", traceback="Traceback ...\nKeyError: 'x'"),
    )
    fake.call_replies = [call_reply(exit_code=1, stderr="Traceback ...", tool=raised)]

    result = mcp_server.call_function(as_executor(fake), "tools", "bad", {}, 30, install=True)

    assert (result.exit_code, result.status) == (1, "raised")
    assert result.error is not None and result.error.type == "KeyError"
    assert "raised KeyError: 'x'" in mcp_server.render_run(result)
    assert "--- traceback ---\nTraceback ...\nKeyError: 'x'" in mcp_server.render_run(result)


def test_call_function_reinstalls_a_removed_runner_and_calls_again(fake: FakeExecutor) -> None:
    missing = call_reply(exit_code=2, stderr="kubectl-executor: no tool runner at /w/.kx-tool-runner.py: ...")
    fake.call_replies = [missing, call_reply(stdout="ok\n")]

    result = mcp_server.call_function(as_executor(fake), "tools", "f", {}, 30, install=False)

    assert result.exit_code == 0 and result.status is None
    assert fake.installs == [("tools", mcp_server.TOOL_RUNNER_FILE)]
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
def test_tool_error_messages(error: Exception, expected: str) -> None:
    assert expected in str(mcp_server.tool_error(error))


def test_config_validation() -> None:
    with pytest.raises(InvalidInputError, match="NetworkPolicy"):
        McpConfig(pool_size=1, executor_kwargs={"network_policy": True})
    with pytest.raises(InvalidInputError, match="'pod_name' is the MCP server's"):
        McpConfig(executor_kwargs={"pod_name": "x"})
    with pytest.raises(InvalidInputError, match="idle_timeout"):
        McpConfig(idle_timeout=-1)


# -- sessions --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(
    make_fake: Callable[..., FakeExecutor], made: list[FakeExecutor], **kwargs: Any
) -> SessionRegistry:
    def factory() -> Any:
        ex = make_fake()
        made.append(ex)
        return ex

    kwargs.setdefault("idle_timeout", 60)
    kwargs.setdefault("max_sessions", 4)
    return SessionRegistry(factory, **kwargs)


async def test_pod_is_made_lazily_and_once_per_session(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []
    reg = registry(make_fake, made)

    ws = reg.acquire("a")
    assert made == []  # a session costs nothing until its first call
    first = await ws.run(lambda w: w.ensure())
    second = await ws.run(lambda w: w.ensure())
    reg.release(ws)

    assert first is second is made[0] and made[0].started
    reg.close_all()
    assert made[0].stopped.is_set()


async def test_sessions_get_separate_pods_and_are_limited(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []
    reg = registry(make_fake, made, max_sessions=2)

    a, b = reg.acquire("a"), reg.acquire("b")
    pods = {(await a.run(lambda w: w.ensure())).pod_name, (await b.run(lambda w: w.ensure())).pod_name}

    assert len(pods) == 2
    with pytest.raises(mcp_server.ToolError, match=r"too many MCP sessions with a pod \(2\)"):
        reg.acquire("c")
    reg.close_all()


def test_idle_sessions_are_reaped_busy_ones_are_not(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []
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


def test_idle_timeout_zero_never_reaps(make_fake: Callable[..., FakeExecutor]) -> None:
    clock = Clock()
    reg = registry(make_fake, [], clock=clock, idle_timeout=0)
    reg.release(reg.acquire("a"))
    clock.now += 10**9

    assert reg.reap() == []
    reg.close_all()


def test_reaper_thread_reaps_without_being_asked(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []
    reg = registry(make_fake, made, idle_timeout=0.2)
    ws = reg.acquire("a")
    ws.ensure()
    reg.release(ws)

    reg.start_reaper()
    try:
        assert made[0].stopped.wait(10)
    finally:
        reg.close_all()
    assert reg.get("a") is None


def test_end_of_session_deletes_the_pod_even_with_a_run_in_flight(
    make_fake: Callable[..., FakeExecutor],
) -> None:
    made: list[FakeExecutor] = []
    reg = registry(make_fake, made)
    ws = reg.acquire("a")
    ex = ws.ensure()
    ex.hold = threading.Event()
    worker = threading.Thread(target=lambda: mcp_server.run_code(ex, "sh", "true", 30))  # type: ignore[arg-type]
    worker.start()
    assert ex.running.wait(10)

    reg.end("a", wait=True)

    assert ex.stopped.is_set()
    worker.join(10)
    with pytest.raises(mcp_server.ToolError, match="session has ended"):
        ws.ensure()


def test_a_start_failure_leaves_no_executor_behind(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []

    def factory() -> Any:
        ex = make_fake()
        ex.start_error = PodStartError("kx-x", "ErrImagePull", "no such image")
        made.append(ex)
        return ex

    ws = Workspace("a", factory)
    with pytest.raises(PodStartError):
        ws.ensure()

    assert made[0].stopped.is_set() and ws.pod_name is None


async def test_a_cancelled_call_stops_the_run_in_the_pod(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []
    reg = registry(make_fake, made)
    ws = reg.acquire("a")
    ex = await ws.run(lambda w: w.ensure())
    ex.hold = threading.Event()

    async with anyio.create_task_group() as tg:

        async def call() -> None:
            await ws.run(lambda w: mcp_server.run_code(w.ensure(), "sh", "true", 30))

        tg.start_soon(call)
        await anyio.to_thread.run_sync(ex.running.wait, 10)
        tg.cancel_scope.cancel()

    assert await anyio.to_thread.run_sync(ex.cancelled.wait, 10)
    reg.close_all()


async def test_one_session_blocking_does_not_block_another(make_fake: Callable[..., FakeExecutor]) -> None:
    made: list[FakeExecutor] = []
    reg = registry(make_fake, made)
    slow, fast = reg.acquire("slow"), reg.acquire("fast")
    slow_ex = await slow.run(lambda w: w.ensure())
    slow_ex.hold = threading.Event()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow.run, lambda w: mcp_server.run_code(w.ensure(), "sh", "true", 30))
        await anyio.to_thread.run_sync(slow_ex.running.wait, 10)
        quick = await fast.run(lambda w: mcp_server.run_code(w.ensure(), "sh", "echo quick", 30))
        assert quick.stdout == "quick\n"
        assert not slow_ex.hold.is_set()  # the slow run was still in flight
        slow_ex.hold.set()
    reg.close_all()


async def test_a_call_into_an_ended_session_is_a_tool_error(make_fake: Callable[..., FakeExecutor]) -> None:
    reg = registry(make_fake, [])
    ws = reg.acquire("a")
    reg.end("a", wait=True)

    with pytest.raises(mcp_server.ToolError, match="session has ended"):
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
    make_fake: Callable[..., FakeExecutor],
) -> Iterator[tuple[KubectlExecutorMcp, list[FakeExecutor]]]:
    made: list[FakeExecutor] = []

    def factory() -> Any:
        ex = make_fake(timeout=7)
        made.append(ex)
        return ex

    server = KubectlExecutorMcp(McpConfig(max_file_bytes=4096, max_timeout=100), executor_factory=factory)
    yield server, made
    server.close()


async def test_tools_and_their_schemas(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeExecutor]],
) -> None:
    server, made = server_and_pods
    async with Client(server.mcp, mode="legacy") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}

    assert set(tools) == {
        "run_code",
        "run_file",
        "upload_file",
        "download_file",
        "call_function",
        "list_files",
        "reset_workspace",
    }
    run = tools["run_code"]
    assert run.input_schema["required"] == ["language", "code"]
    assert {"exit_code", "stdout", "stderr", "timed_out", "truncation_note"} <= set(
        run.output_schema["properties"]
    )
    assert {"content_base64", "text"} <= set(tools["upload_file"].input_schema["properties"])
    assert {"status", "value", "error"} <= set(tools["call_function"].output_schema["properties"])
    assert (
        tools["download_file"].annotations is not None and tools["download_file"].annotations.read_only_hint
    )
    assert made == []  # listing tools makes no pod


async def test_calls_through_the_client(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeExecutor]],
) -> None:
    server, made = server_and_pods
    async with Client(server.mcp, mode="legacy") as client:
        three = await client.call_tool(
            "run_code", {"language": "python", "code": "import sys; print(1); sys.exit(3)"}
        )
        slow = await client.call_tool("run_code", {"language": "sh", "code": "echo hi", "timeout": 5})
        too_long = await client.call_tool("run_code", {"language": "sh", "code": "true", "timeout": 101})
        bad = await client.call_tool("upload_file", {"path": "../x", "text": "a"})
        up = await client.call_tool("upload_file", {"path": "d/x.txt", "text": "hello"})
        listing = await client.call_tool("list_files", {"path": "d"})
        reset = await client.call_tool("reset_workspace", {})
        after = await client.call_tool("list_files", {})

    assert not three.is_error
    assert three.structured_content is not None and three.structured_content["exit_code"] == 3
    assert three.content[0].text.startswith("exit code 3")  # type: ignore[union-attr]
    assert made[0].requests[0].timeout == 7.0  # the executor's default
    assert slow.structured_content is not None and made[0].requests[1].timeout == 5.0
    assert too_long.is_error and "between 1 and 100 seconds" in too_long.content[0].text  # type: ignore[union-attr]
    assert bad.is_error and "escapes the workspace" in bad.content[0].text  # type: ignore[union-attr]
    assert up.structured_content is not None and up.structured_content["size"] == 5
    assert listing.structured_content is not None
    assert [e["path"] for e in listing.structured_content["entries"]] == ["x.txt"]
    assert (
        reset.structured_content is not None and reset.structured_content["deleted_pod"] == made[0].pod_name
    )
    assert made[0].stopped.is_set()
    assert after.structured_content is not None and after.structured_content["entries"] == []
    assert after.structured_content["pod"] == made[1].pod_name  # a fresh pod after the reset
    assert made[1].stopped.is_set()  # the session ended with the client: its pod is gone


async def test_cluster_errors_are_tool_errors_and_the_server_keeps_serving(
    server_and_pods: tuple[KubectlExecutorMcp, list[FakeExecutor]],
) -> None:
    server, made = server_and_pods
    async with Client(server.mcp, mode="legacy") as client:
        await client.call_tool("run_code", {"language": "sh", "code": "true"})
        made[0].execute_error = OutcomeUnknownError("the stream dropped")
        lost = await client.call_tool("run_code", {"language": "sh", "code": "true"})
        made[0].execute_error = NotFoundError(
            ["kubectl", "exec"], 1, 'pods "kx" not found', "pods kx not found"
        )
        gone = await client.call_tool("run_code", {"language": "sh", "code": "true"})
        fresh = await client.call_tool("run_code", {"language": "sh", "code": "echo again"})

    assert lost.is_error and "NOT repeated" in lost.content[0].text  # type: ignore[union-attr]
    assert gone.is_error and "next call starts a fresh pod" in gone.content[0].text  # type: ignore[union-attr]
    assert made[0].stopped.is_set()
    assert fresh.structured_content is not None and fresh.structured_content["stdout"] == "again\n"
    assert fresh.structured_content["pod"] == made[1].pod_name


async def test_a_pod_that_cannot_start_is_a_tool_error(make_fake: Callable[..., FakeExecutor]) -> None:
    def factory() -> Any:
        ex = make_fake()
        ex.start_error = PodStartError("kx-1", "ErrImagePull", "image nope:1 not found")
        return ex

    server = KubectlExecutorMcp(executor_factory=factory)
    try:
        async with Client(server.mcp, mode="legacy") as client:
            result = await client.call_tool("run_code", {"language": "sh", "code": "true"})
    finally:
        server.close()

    assert result.is_error
    assert "the sandbox pod cannot start: ErrImagePull: image nope:1 not found" in result.content[0].text  # type: ignore[union-attr]


def test_session_keys_stdio_and_http() -> None:
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

    assert mcp_server.session_key(ctx(None)) == "stdio"
    assert mcp_server.session_key(ctx(Request({"mcp-session-id": "abc"}))) == "http:abc"
    with pytest.raises(mcp_server.ToolError, match="no MCP session"):
        mcp_server.session_key(ctx(Request({})))  # the 2026-07-28 era over HTTP has no sessions


async def test_discover_is_refused_over_http_only() -> None:
    class Ctx:
        method = "server/discover"
        request: object | None = object()

    async def call_next(ctx: Any) -> str:
        return "served"

    with pytest.raises(mcp_server.MCPError, match="initialize handshake"):
        await mcp_server._sessions_need_handshake(Ctx(), call_next)
    stdio = Ctx()
    stdio.request = None
    assert await mcp_server._sessions_need_handshake(stdio, call_next) == "served"


async def test_an_accepted_delete_ends_the_session() -> None:
    ended: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = 200 if scope["method"] == "DELETE" and scope["path"] == "/mcp" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    watcher = mcp_server._SessionEndWatcher(app, ended.append)
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
        "try:\n    import kubectl_executor.mcp_server\nexcept ImportError as e:\n    print(e)\n"
    )

    assert "pip install 'kubectl-executor[mcp]'" in done.stdout, done.stderr


def test_cli_mcp_builds_the_server_from_flags_and_env(
    monkeypatch: pytest.MonkeyPatch, fake_kubectl: str
) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(self: KubectlExecutorMcp) -> None:
        seen["config"] = self.config

    monkeypatch.setattr(KubectlExecutorMcp, "serve_stdio", fake_serve)
    monkeypatch.setattr(cli_module, "_close_on_sigterm", lambda close: seen.setdefault("sigterm", close))
    env = {"KUBECTL_EXECUTOR_NAMESPACE": "sandbox", "KUBECTL_EXECUTOR_MCP_POOL_SIZE": "2"}
    result = CliRunner().invoke(
        cli_module.cli,
        [
            "mcp",
            *(
                "--kubectl",
                fake_kubectl,
                "--image",
                "python:3.12-slim",
                "--idle-timeout",
                "5m",
                "--memory-limit",
                "1Gi",
            ),
            *("--timeout", "9", "--env", "A=b", "--no-hardened", "--max-file-bytes", "2048"),
        ],
        env=env,
    )

    assert result.exit_code == 0, result.output
    config: McpConfig = seen["config"]
    kwargs = dict(config.executor_kwargs)
    assert (config.idle_timeout, config.pool_size, config.max_file_bytes) == (300.0, 2, 2048)
    assert (
        kwargs["namespace"] == "sandbox" and kwargs["image"] == "python:3.12-slim" and kwargs["timeout"] == 9
    )
    assert kwargs["resources"].memory_limit == "1Gi" and kwargs["hardened"] is False
    assert kwargs["env_vars"] == [{"key": "A", "value": "b"}]
    assert kwargs["max_output_bytes"] == mcp_server.DEFAULT_MAX_OUTPUT_BYTES
    assert "network_policy" not in kwargs


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
