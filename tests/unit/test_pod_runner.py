"""The in-pod runners, run for real as local processes: _pod/run.py (through the launcher the
executor uses, as whenever the image has python3) and _pod/run.sh (images without it). Every test
runs against both: they speak one protocol and must behave alike.

This is what `kubectl exec -i POD -- sh -c LAUNCH kx ...` runs in the pod; no kubectl is involved.
Needs POSIX sh, coreutils `timeout` and python3 on the host.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kx_fakes import Collected, run_sh_locally

from kubectl_executor._exec.protocol import LOG_DIR, MarkerFilter, Outcome, RunRequest, exec_input

pytestmark = pytest.mark.skipif(
    not (shutil.which("timeout") and shutil.which("python3") and os.path.exists("/bin/sh")),
    reason="needs /bin/sh, coreutils timeout and python3 (a POSIX host)",
)


@dataclass
class Ran:
    outcome: Outcome | None
    stdout: bytes  # the program's, markers removed
    stderr: bytes
    returncode: int  # of sh itself
    elapsed: float
    request: RunRequest


IMPLEMENTATION = ["run.py"]  # set per test by the autouse fixture below


@pytest.fixture(autouse=True, params=["run.py", "run.sh"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    IMPLEMENTATION[0] = request.param
    yield request.param
    IMPLEMENTATION[0] = "run.py"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "workspace"
    d.mkdir()
    return d


def run(
    work: Path,
    code: bytes | str,
    *,
    runner: str | None = "python",
    path: str = "block.py",
    timeout: float = 30,
    kill_after: float = 1,
    budget: int = 1 << 20,
    env: dict[str, str] | None = None,
) -> Ran:
    request = RunRequest(
        code=code.encode() if isinstance(code, str) else code,
        work_dir=str(work),
        path=path,
        runner=runner,
        timeout=timeout,
        kill_after=kill_after,
        budget=budget,
        env=env or {},
    )
    started = time.monotonic()
    done = run_sh_locally(request.encode(), timeout=timeout + kill_after + 30, runner=IMPLEMENTATION[0])
    elapsed = time.monotonic() - started
    out = Collected()
    marker = MarkerFilter(request.nonce, out)
    marker.feed(done.stdout)
    outcome = marker.close()
    return Ran(outcome, out.value, done.stderr, done.returncode, elapsed, request)


def assert_outcome(ran: Ran, rc: int, timed_out: bool = False) -> None:
    assert ran.outcome is not None, (ran.stdout, ran.stderr)
    assert (ran.outcome.exit_code, ran.outcome.timed_out) == (rc, timed_out), (ran.stdout, ran.stderr)
    assert ran.returncode == 0  # the runner itself always exits 0 once it could report


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between open and read
        return True
    return state in ("Z", "X")  # a zombie is dead; its reaper is not ours


def wait_gone(pid: int, within: float = 5.0) -> bool:
    """Poll until the process has died (SIGKILL delivery is asynchronous), bounded."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)


# -- exit codes ----------------------------------------------------------------------------------------------


def test_success_and_output(work: Path) -> None:
    ran = run(work, "print('hello')\nimport sys; print('oops', file=sys.stderr)\n")
    assert_outcome(ran, 0)
    assert ran.stdout == b"hello\n"
    assert ran.stderr == b"oops\n"


@pytest.mark.parametrize("rc", [1, 3, 42, 255])
def test_exact_exit_codes_sh(work: Path, rc: int) -> None:
    assert_outcome(run(work, f"echo before\nexit {rc}\n", runner="sh", path="b.sh"), rc)


def test_exact_exit_code_python(work: Path) -> None:
    assert_outcome(run(work, "import sys\nsys.exit(3)\n"), 3)


def test_bash_runner(work: Path) -> None:
    if not shutil.which("bash"):
        pytest.skip("no bash")
    ran = run(work, "a=(x y z)\necho ${#a[@]}\nexit 5\n", runner="bash", path="b.sh")
    assert_outcome(ran, 5)
    assert ran.stdout == b"3\n"


def test_sigkill_is_137(work: Path) -> None:
    ran = run(work, "import os, signal\nprint('dying', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert_outcome(ran, 137, timed_out=False)
    assert ran.stdout == b"dying\n"


def test_output_without_trailing_newline_is_exact(work: Path) -> None:
    ran = run(work, "import sys\nsys.stdout.write('no newline')\n")
    assert_outcome(ran, 0)
    assert ran.stdout == b"no newline"


def test_user_output_with_a_fake_marker_is_kept(work: Path) -> None:
    fake = "\\n__KX_EXIT_deadbeefdeadbeefdeadbeef__ 0 0 0\\n"
    ran = run(work, f"import sys\nsys.stdout.write('{fake}')\nsys.exit(9)\n")
    assert_outcome(ran, 9)
    assert ran.stdout == b"\n__KX_EXIT_deadbeefdeadbeefdeadbeef__ 0 0 0\n"


# -- timeouts ---------------------------------------------------------------------------------------------------


def test_timeout_is_124_and_kills_background_children(work: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = f'sleep 300 &\necho $! > "{pidfile}"\necho started\nwait\n'
    ran = run(work, code, runner="sh", path="b.sh", timeout=1, kill_after=0.5)
    assert_outcome(ran, 124, timed_out=True)
    assert ran.stdout == b"started\n"
    assert ran.elapsed < 15, "the runner waited for the background child"
    child = int(pidfile.read_text())
    assert wait_gone(child), f"background sleep {child} survived the timeout"


def test_background_child_of_a_finished_block_is_stopped(work: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    ran = run(work, f'sleep 300 &\necho $! > "{pidfile}"\nexit 0\n', runner="sh", path="b.sh")
    assert_outcome(ran, 0)
    assert ran.elapsed < 15
    assert wait_gone(int(pidfile.read_text()))


def test_term_ignoring_program_is_killed_after_grace(work: Path) -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(300)\n"
    ran = run(work, code, timeout=1, kill_after=0.5)
    assert ran.outcome is not None
    assert ran.outcome.timed_out
    assert ran.outcome.exit_code in (124, 137)
    assert ran.elapsed < 15


def test_quick_exit_124_is_not_a_timeout(work: Path) -> None:
    ran = run(work, "exit 124\n", runner="sh", path="b.sh", timeout=20)
    assert_outcome(ran, 124, timed_out=False)
    assert ran.elapsed < 15


def test_quick_sigkill_is_not_a_timeout(work: Path) -> None:
    ran = run(work, "kill -9 $$\n", runner="sh", path="b.sh", timeout=20)
    assert_outcome(ran, 137, timed_out=False)


# -- code and input ------------------------------------------------------------------------------------------------


def test_code_arrives_byte_identical(work: Path) -> None:
    code = (
        b"# $HOME `id` $(whoami) ${PATH} \\n '\"\n"
        b"EOF\n"
        b"'EOF'\n"
        b"cat <<EOF\n"
        b"\t tab and trailing spaces   \r\n"
        b"\xff\xfe binary \x00 nul\n"
        b"no newline at end"
    )
    ran = run(work, code, runner=None, path="data/blob.bin")
    assert_outcome(ran, 0)
    assert (work / "data" / "blob.bin").read_bytes() == code


def test_large_code_arrives_intact(work: Path) -> None:
    code = os.urandom(512 * 1024)
    assert_outcome(run(work, code, runner=None, path="big.bin"), 0)
    assert (work / "big.bin").read_bytes() == code


def test_program_reading_stdin_sees_eof_immediately(work: Path) -> None:
    ran = run(work, "import sys\nprint(repr(sys.stdin.read()))\n", timeout=10)
    assert_outcome(ran, 0)
    assert ran.stdout == b"''\n"
    assert ran.elapsed < 8


def test_env_lines_are_exported_literally(work: Path) -> None:
    env = {"GREETING": "hello world", "TRICKY": "$(echo pwned) `id` 'q' \"dq\" ;x", "EMPTY": ""}
    code = "import os, json\nprint(json.dumps({k: os.environ.get(k) for k in ['GREETING', 'TRICKY', 'EMPTY']}))\n"
    ran = run(work, code, env=env)
    assert_outcome(ran, 0)
    import json

    assert json.loads(ran.stdout) == env


def test_python_is_unbuffered(work: Path) -> None:
    ran = run(work, "import os\nprint(os.environ.get('PYTHONUNBUFFERED'))\n")
    assert ran.stdout == b"1\n"


def test_runs_with_work_dir_file_path(work: Path) -> None:
    ran = run(work, "import sys, os\nprint(sys.argv[0])\n", path="pkg/main.py")
    assert_outcome(ran, 0)
    assert ran.stdout.decode().strip() == str(work / "pkg" / "main.py")


# -- files ------------------------------------------------------------------------------------------------------------


def test_file_written_into_nested_dir_atomically(work: Path) -> None:
    (work / "a" / "b").mkdir(parents=True)
    (work / "a" / "b" / "c.py").write_text("old content that is longer than the new one\n")
    ran = run(work, "print('new')\n", path="a/b/c.py")
    assert_outcome(ran, 0)
    assert (work / "a" / "b" / "c.py").read_text() == "print('new')\n"
    leftovers = [p.name for p in (work / "a" / "b").iterdir() if p.name != "c.py"]
    assert leftovers == [], leftovers


def test_save_only_writes_and_does_not_run(work: Path, tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    ran = run(work, f"touch {witness}\n", runner=None, path="x.sh")
    assert_outcome(ran, 0)
    assert ran.stdout == b""
    assert (work / "x.sh").exists()
    assert not witness.exists()


def test_unwritable_work_dir_reports_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    ran = run(blocker, "print(1)\n", path="a/b.py")
    assert_outcome(ran, 1)
    assert b"kubectl-executor: cannot" in ran.stderr


def test_unknown_runner_reports_exit_1(work: Path) -> None:
    ran = run(work, "x", runner="cobol", path="x.cob")
    assert_outcome(ran, 1)
    assert b"unknown runner cobol" in ran.stderr


def test_bad_header_is_refused(work: Path) -> None:
    done = run_sh_locally(b"HELLO there\n", runner=IMPLEMENTATION[0])
    assert done.returncode == 97
    assert b"bad request header" in done.stderr
    assert b"__KX_START_" not in done.stdout


# -- logs and the budget -------------------------------------------------------------------------------------------


def test_logs_removed_under_the_budget(work: Path) -> None:
    ran = run(work, "print('x' * 100)\n", budget=10_000)
    assert ran.outcome is not None and ran.outcome.log_kept is False
    nonce = ran.request.nonce
    for suffix in ("out", "err", "rc", "pid"):
        assert not Path(f"{LOG_DIR}/{nonce}.{suffix}").exists(), suffix


def test_logs_kept_over_the_budget(work: Path) -> None:
    code = "import sys\nprint('o' * 3000)\nprint('e' * 3000, file=sys.stderr)\n"
    ran = run(work, code, budget=1000)
    assert ran.outcome is not None and ran.outcome.log_kept is True
    nonce = ran.request.nonce
    assert Path(f"{LOG_DIR}/{nonce}.out").read_bytes() == b"o" * 3000 + b"\n"
    assert Path(f"{LOG_DIR}/{nonce}.err").read_bytes() == b"e" * 3000 + b"\n"
    assert not Path(f"{LOG_DIR}/{nonce}.rc").exists()
    assert not Path(f"{LOG_DIR}/{nonce}.pid").exists()
    # The stream itself is complete: the budget only decides what the pod keeps.
    assert ran.stdout == b"o" * 3000 + b"\n"


def test_runner_script_is_posix_sh() -> None:
    """dash is the strictest common /bin/sh; the runner must parse with it (no bashisms)."""
    if not shutil.which("dash"):
        pytest.skip("no dash")
    import subprocess

    from kubectl_executor._exec.protocol import RUN_SCRIPT

    done = subprocess.run(["dash", "-n", "-c", RUN_SCRIPT], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert sys.platform != "win32"


def test_work_dir_with_spaces_and_unicode(tmp_path: Path) -> None:
    work = tmp_path / "my work dir ü"
    work.mkdir()
    ran = run(work, "print('ok')\n", path="sub dir/ファイル.py")
    assert_outcome(ran, 0)
    assert ran.stdout == b"ok\n"
    assert (work / "sub dir" / "ファイル.py").read_text() == "print('ok')\n"


def test_missing_interpreter_is_127(work: Path) -> None:
    if shutil.which("pwsh"):
        pytest.skip("pwsh is installed here")
    ran = run(work, "Write-Output 1", runner="pwsh", path="x.ps1")
    assert_outcome(ran, 127)


# -- a Python block is `python3 FILE`, whichever runner ran it ------------------------------------------------------


def run_directly(work: Path, code: str, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """The reference: the host's python3 running the same file the way run.sh does."""
    import subprocess

    path = work / "direct.py"
    path.write_text(code)
    done = subprocess.run(
        ["python3", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": "/nonexistent",
             "PYTHONUNBUFFERED": "1", **(env or {})},
        timeout=60,
        check=False,
    )  # fmt: skip
    status = done.returncode if done.returncode >= 0 else 128 - done.returncode
    return (
        status,
        done.stdout.replace(b"direct.py", b"block.py"),
        done.stderr.replace(b"direct.py", b"block.py"),
    )


AS_A_SCRIPT = '''"""The module docstring."""
import sys
print(__name__, __file__, __doc__, __spec__, __package__)
print(sys.argv, sys.path[0], repr(sys.stdin.read()))
print(type(sys.stdout.buffer).__name__, sys.stdout.write_through, sys.stderr.write_through, sys.stdout.encoding)
print(sys.modules["__main__"].__dict__ is globals())
'''


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("script module", AS_A_SCRIPT),
        ("uncaught exception", "def f():\n    raise ValueError('bad')\nprint('before')\nf()\n"),
        ("syntax error", "print('never')\nprint(\n"),
        ("exit with a message", "import sys\nsys.exit('no luck')\n"),
        ("keyboard interrupt", "raise KeyboardInterrupt\n"),
        (
            "atexit, threads, unclosed files",
            "import atexit, threading\n"
            "atexit.register(print, 'atexit ran')\n"
            "done = threading.Event()\n"
            "threading.Thread(target=lambda: (done.wait(5), print('thread finished'))).start()\n"
            "import os\nf = open(os.path.join(os.path.dirname(__file__), 'unclosed.txt'), 'w')\n"
            "f.write('flushed at exit')\n"
            "done.set()\n",
        ),
        (
            "multiprocessing spawn",
            "import multiprocessing as mp\n"
            "def double(x):\n    return 2 * x\n"
            "if __name__ == '__main__':\n"
            "    with mp.get_context('spawn').Pool(1) as pool:\n        print(pool.map(double, [1, 2]))\n",
        ),
    ],
)
def test_python_block_is_indistinguishable_from_python3_file(work: Path, name: str, code: str) -> None:
    status, stdout, stderr = run_directly(work, code)
    direct_file = (work / "unclosed.txt").read_bytes() if (work / "unclosed.txt").exists() else None
    (work / "unclosed.txt").unlink(missing_ok=True)
    ran = run(work, code, path="block.py")
    assert_outcome(ran, status)
    assert (ran.stdout, ran.stderr) == (stdout, stderr), name
    runner_file = (work / "unclosed.txt").read_bytes() if (work / "unclosed.txt").exists() else None
    assert runner_file == direct_file
    if "unclosed" in code:
        assert runner_file == b"flushed at exit"


def test_python_variables_get_a_real_interpreter(work: Path) -> None:
    """PYTHONHASHSEED and friends act at interpreter start: such a block is not run in a fork."""
    code = "print(hash('kubectl-executor'))\n"
    env = {"PYTHONHASHSEED": "7"}
    status, stdout, _ = run_directly(work, code, env)
    ran = run(work, code, env=env)
    assert_outcome(ran, status)
    assert ran.stdout == stdout


def test_a_forked_and_detached_python_process_is_stopped(work: Path, tmp_path: Path) -> None:
    """Escaped the group (setsid) without exec: only the run's mark in its environment finds it."""
    pidfile = tmp_path / "escapee.pid"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        f"while not os.path.exists({str(pidfile)!r}):\n    time.sleep(0.01)\n"
    )
    ran = run(work, code, timeout=60)
    assert_outcome(ran, 0)
    assert wait_gone(int(pidfile.read_text())), "the detached process survived the block"


def test_only_run_sh_starts_an_interpreter_for_a_python_block(work: Path, implementation: str) -> None:
    ran = run(work, "import sys\nprint(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[1:2])\n")
    assert_outcome(ran, 0)
    if implementation == "run.py":
        assert ran.stdout == b"[b'-c']\n"  # the runner's own `python3 -c`, forked
    else:
        assert ran.stdout == f"[{str(work / 'block.py').encode()!r}]\n".encode()  # python3 FILE


def test_a_block_does_not_outlive_its_client(work: Path, tmp_path: Path, implementation: str) -> None:
    """kubectl gone (its end of our stdout closed): run.py stops the block at once; run.sh, which
    cannot notice until the block writes, still stops it at its deadline."""
    import subprocess

    from kx_fakes import LAUNCH, LOADER, RUN_SCRIPT, path_without_python3

    pidfile = tmp_path / "block.pid"
    deadline = 60 if implementation == "run.py" else 3
    code = f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\nprint('up', flush=True)\ntime.sleep(300)\n"
    request = RunRequest(code.encode(), str(work), "block.py", "python", deadline, kill_after=1)
    path = os.environ.get("PATH", "/usr/bin:/bin") if implementation == "run.py" else path_without_python3()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", LAUNCH, "kx", request.nonce, LOADER, RUN_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": path, "LANG": "C.UTF-8", "HOME": "/nonexistent"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(exec_input(request))
    proc.stdin.close()
    seen = b""
    while b"up\n" not in seen:
        chunk = proc.stdout.read1(4096)
        assert chunk, seen
        seen += chunk
    proc.stdout.close()  # the client hangs up
    try:
        assert wait_gone(int(pidfile.read_text()), within=15), "the block outlived its client"
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
