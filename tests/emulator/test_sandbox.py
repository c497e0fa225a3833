"""The emulator's pod sandbox (bubblewrap + nsenter) behaves like a container runtime.

Each test drives its own event loop with asyncio.run (pytest-asyncio is not used here).
Needs root, bwrap, nsenter and setpriv; skipped otherwise.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

from kube_emulator import images  # noqa: E402
from kube_emulator.sandbox import ContainerSpec, Mount, Sandbox, SandboxError  # noqa: E402

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("bwrap", "nsenter", "setpriv")),
        reason="the sandbox needs root, bwrap, nsenter and setpriv",
    ),
    pytest.mark.timeout(60),
]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def sh(sb: Sandbox, script: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run a shell script in the sandbox; (returncode, stdout, stderr)."""
    return await ex(sb, ["sh", "-c", script], stdin)


async def ex(sb: Sandbox, argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await sb.exec(argv)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def spec(image: str = "python:3.12-slim", **kw: Any) -> ContainerSpec:
    return ContainerSpec(image=image, **kw)


async def with_sandbox(pod_dir: Path, cspec: ContainerSpec, body: Callable[[Sandbox], Awaitable[T]]) -> T:
    sb = await Sandbox.start(pod_dir.name, pod_dir, cspec)
    try:
        return await body(sb)
    finally:
        await sb.kill()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")


def host_pids_in(ns_inode: int) -> dict[int, str]:
    """Host pid -> command line of every live process in the pid namespace with this inode."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != ns_inode or _zombie(entry):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
    return found


# -- exec -----------------------------------------------------------------------------------------


def test_exec_exit_codes_are_exact_and_signals_negative(tmp_path: Path) -> None:
    async def body(sb: Sandbox) -> None:
        for code in (0, 3, 255):
            assert (await sh(sb, f"exit {code}"))[0] == code
        # nsenter re-raises the child's signal, so asyncio sees -N (the server reports 128+N).
        assert (await sh(sb, "kill -TERM $$"))[0] == -15
        assert (await sh(sb, "kill -KILL $$"))[0] == -9
        rc, _, err = await ex(sb, ["no-such-command"])
        assert rc == 127
        assert "no-such-command" in err
        # NAME=VALUE as argv[0] is a file name to a runtime, not an env assignment.
        assert (await ex(sb, ["A=B"]))[0] == 127

    run(with_sandbox(tmp_path / "p", spec(), body))


def test_stdin_eof_and_separate_streams(tmp_path: Path) -> None:
    async def body(sb: Sandbox) -> None:
        data = b"line one\n" + bytes(range(256)) * 512
        rc, out, _ = await ex(sb, ["sh", "-c", "cat | wc -c"], data)
        assert (rc, out.strip()) == (0, str(len(data)))
        rc, out, err = await sh(sb, "echo to-out; echo to-err >&2; exit 4")
        assert (rc, out, err) == (4, "to-out\n", "to-err\n")

    run(with_sandbox(tmp_path / "p", spec(), body))


def test_env_working_dir_and_user_apply_to_execs(tmp_path: Path) -> None:
    cspec = spec(
        env={"GREETING": "hello world", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        working_dir="/work/sub",
        run_as_user=1000,
        run_as_group=3000,
        mounts=[Mount(tmp_path / "vol", "/work")],
    )

    async def body(sb: Sandbox) -> None:
        rc, out, _ = await sh(sb, 'id -u; id -g; id -G; pwd; echo "$GREETING|$PATH|$HOME|$HOSTNAME"')
        assert rc == 0
        assert out.splitlines() == [
            "1000",
            "3000",
            "3000",
            "/work/sub",
            "hello world|/usr/local/bin:/usr/bin:/bin|/|my-pod",
        ]
        # the volume is writable by the pod's user and the file is its own on the host
        assert (await sh(sb, "echo x > /work/f"))[0] == 0
        assert (tmp_path / "vol" / "f").stat().st_uid == 1000
        # not root: no writes to the (root-owned) sandbox root
        assert (await sh(sb, "touch /not-mine"))[0] != 0

    run(with_sandbox(tmp_path / "my-pod", cspec, body))


def test_main_process_runs_as_user_with_command_and_args(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    cspec = spec(
        command=["sh", "-c"],
        args=['id -u > /data/uid; echo "$0 $PWD" > /data/args; exec sleep infinity', "arg0"],
        working_dir="/data",
        run_as_user=1234,
        mounts=[Mount(vol, "/data")],
    )

    async def body(sb: Sandbox) -> None:
        # The shell creates the file before it writes the line: wait for the line, not the file.
        await asyncio.to_thread(
            wait_for, lambda: (vol / "args").is_file() and (vol / "args").read_text().endswith("\n")
        )
        assert (vol / "uid").read_text() == "1234\n"
        assert (vol / "args").read_text() == "arg0 /data\n"
        assert sb.main_exit_code() is None
        # runAsGroup unset: gid 0 like a runtime for a uid without a passwd entry
        assert (await sh(sb, "id -u; id -g"))[1].split() == ["1234", "0"]

    run(with_sandbox(tmp_path / "p", cspec, body))


def test_main_exit_code_is_reported(tmp_path: Path) -> None:
    async def main() -> None:
        sb = await Sandbox.start("p", tmp_path / "p", spec(command=["sh", "-c", "exit 7"]))
        try:
            assert await asyncio.wait_for(sb.wait_main(), 10) == 7
            assert sb.main_exit_code() == 7
            with pytest.raises(SandboxError):
                await sb.exec(["true"])
        finally:
            await sb.kill()
        # args alone replace the image's CMD (the emulated images have no ENTRYPOINT)
        sb = await Sandbox.start("q", tmp_path / "q", spec(args=["sh", "-c", "exit 5"]))
        try:
            assert await asyncio.wait_for(sb.wait_main(), 10) == 5
        finally:
            await sb.kill()

    run(main())


# -- pod lifetime ---------------------------------------------------------------------------------


def test_tmp_and_background_processes_persist_across_execs(tmp_path: Path) -> None:
    async def body(sb: Sandbox) -> None:
        assert (await sh(sb, "echo kept > /tmp/state; sleep 1000 > /dev/null 2>&1 & echo $!"))[0] == 0
        rc, out, _ = await sh(sb, "cat /tmp/state; ps -o args= -e")
        assert rc == 0
        lines = out.splitlines()
        assert lines[0] == "kept"
        assert "sleep 1000" in lines
        assert "sleep infinity" in lines  # the main process, in the same pid namespace
        # the pod has its own pid namespace: the host's processes are invisible
        assert str(os.getpid()) not in (await sh(sb, "ls /proc"))[1].split()

    run(with_sandbox(tmp_path / "p", spec(), body))


def test_kill_kills_everything_in_the_pod(tmp_path: Path) -> None:
    async def main() -> None:
        sb = await Sandbox.start("p", tmp_path / "p", spec())
        ns = os.stat(f"/proc/{sb.pid}/ns/pid").st_ino
        assert (await sh(sb, "sleep 1000 > /dev/null 2>&1 &"))[0] == 0
        sleepers = [p for p, cmd in host_pids_in(ns).items() if cmd == "sleep 1000"]
        assert len(sleepers) == 1
        long_exec = await sb.exec(["sleep", "999"])
        await sb.kill()
        assert host_pids_in(ns) == {}
        assert not os.path.exists(f"/proc/{sleepers[0]}")
        # an exec that was running ends with the pod
        await asyncio.wait_for(long_exec.wait(), 10)
        assert sb.main_exit_code() is not None
        await sb.kill()  # idempotent
        with pytest.raises(SandboxError):
            await sb.exec(["true"])

    run(main())


def test_sandboxes_die_with_the_emulator_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(FIXTURES)!r})
        from pathlib import Path
        from kube_emulator.sandbox import ContainerSpec, Sandbox

        async def main():
            sb = await Sandbox.start("p", Path({str(tmp_path / "p")!r}),
                                     ContainerSpec(image="python:3-slim"))
            proc = await sb.exec(["sh", "-c", "sleep 1000 > /dev/null 2>&1 &"])
            await proc.wait()
            print(os.stat(f"/proc/{{sb.pid}}/ns/pid").st_ino, flush=True)
            os._exit(0)  # no cleanup: the kernel must take the sandbox down

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    ns = int(out.stdout.strip())
    # Zombies do not count: their parent may be the host's init, which reaps when it likes.
    wait_for(lambda: not host_pids_in(ns))


def test_cancelled_starts_leave_no_processes(tmp_path: Path) -> None:
    """A pod deleted while its sandbox starts must not leave a half-built pid 1 behind."""

    async def main() -> None:
        for i in range(24):
            task = asyncio.create_task(Sandbox.start("c", tmp_path / f"c{i}", spec()))
            for _ in range(i % 8):  # cancel at different points of the start
                await asyncio.sleep(0.0005)
            task.cancel()
            try:
                sb = await task
            except asyncio.CancelledError:
                continue
            await sb.kill()

    run(main())
    gc.collect()  # an unreaped process would surface here as an unclosed-transport warning

    def leftovers() -> list[int]:
        pids = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    mine = str(tmp_path).encode() in f.read()
                with open(f"/proc/{entry}/stat") as f:
                    alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                continue
            if mine and alive:
                pids.append(int(entry))
        return pids

    wait_for(lambda: not leftovers())


# -- image profiles -------------------------------------------------------------------------------


def test_python_images_have_python(tmp_path: Path) -> None:
    async def body(sb: Sandbox) -> None:
        rc, out, _ = await sh(sb, "command -v python; command -v python3; echo $PATH $LANG")
        assert rc == 0
        assert out.splitlines() == [
            "/usr/local/bin/python",
            "/usr/local/bin/python3",
            "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin C.UTF-8",
        ]
        rc, out, _ = await ex(sb, ["python", "-c", "import socket; print(socket.gethostname())"])
        assert (rc, out) == (0, "py-pod\n")
        for tool in ("sh", "bash", "tar", "timeout", "cat"):
            assert (await sh(sb, f"command -v {tool}"))[0] == 0, tool

    run(with_sandbox(tmp_path / "py-pod", spec("python:3-slim"), body))


@pytest.mark.parametrize("image", ["busybox:1.36", "alpine", "docker.io/library/alpine:3.20"])
def test_busybox_and_alpine_have_no_python(tmp_path: Path, image: str) -> None:
    async def body(sb: Sandbox) -> None:
        for name in ("python", "python3", "python3.11", "pip"):
            assert (await sh(sb, f"command -v {name}"))[0] != 0, name
        assert (await ex(sb, ["python3", "-c", "1"]))[0] == 127
        assert (await sh(sb, "test -e /usr/bin/python3 || test -e /bin/python3"))[0] == 1
        # everything else of /usr/bin still works, also through /bin and symlinked tools
        rc, out, _ = await sh(sb, "/bin/ls / > /dev/null && echo a | tr a b && tar --version | head -1")
        assert rc == 0
        assert out.startswith("b\ntar")

    run(with_sandbox(tmp_path / "p", spec(image), body))


def test_non_root_user_reaches_tools_and_nested_mounts(tmp_path: Path) -> None:
    """Directories the sandbox makes (mount parents, the python-less /usr/bin) are 0755."""
    cspec = spec("busybox", run_as_user=1000, mounts=[Mount(tmp_path / "v", "/data/deep/vol")])

    async def body(sb: Sandbox) -> None:
        rc, out, err = await sh(sb, "tar --version | head -1; touch /data/deep/vol/f && echo ok")
        assert (rc, err) == (0, "")
        assert out.startswith("tar ")
        assert out.endswith("\nok\n")
        assert (tmp_path / "v" / "f").exists()

    run(with_sandbox(tmp_path / "p", cspec, body))


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("fail/errimagepull", "ErrImagePull"),
        ("fail/imagepullbackoff:latest", "ImagePullBackOff"),
        ("fail/unschedulable", "Unschedulable"),
        ("docker.io/fail/createcontainerconfigerror:v1", "CreateContainerConfigError"),
    ],
)
def test_failure_images_raise_image_error(tmp_path: Path, image: str, reason: str) -> None:
    with pytest.raises(images.ImageError) as info:
        images.resolve(image)
    assert info.value.reason == reason
    assert info.value.message
    with pytest.raises(images.ImageError):
        run(Sandbox.start("p", tmp_path / "p", spec(image)))


def test_crash_image_starts_and_exits_1(tmp_path: Path) -> None:
    async def main() -> None:
        sb = await Sandbox.start("p", tmp_path / "p", spec("fail/crash", command=["sleep", "100"]))
        try:
            assert await asyncio.wait_for(sb.wait_main(), 10) == 1
        finally:
            await sb.kill()

    run(main())


def test_image_name_parsing() -> None:
    assert images.repository("docker.io/library/busybox:1.36@sha256:abc") == "busybox"
    assert images.repository("localhost:5000/fail/crash:v1") == "fail/crash"
    assert images.repository("Python:3.12-slim") == "python"
    assert images.resolve("registry.example.com/team/alpine-tools:1").has_python is False
    assert images.resolve("ghcr.io/org/busyboxy").has_python is False
    assert images.resolve("python:3-slim").has_python is True
    assert images.resolve("ubuntu:24.04").has_python is True


# -- filesystem -----------------------------------------------------------------------------------


def test_root_home_holds_the_skeleton(tmp_path: Path) -> None:
    async def body(sb: Sandbox) -> None:
        rc, out, _ = await sh(sb, 'echo "$HOME"; ls -A ~; echo more >> ~/.bashrc && echo ok')
        assert rc == 0
        lines = out.splitlines()
        assert lines[0] == "/root"
        assert {".bashrc", ".profile"} <= set(lines[1:-1])
        assert lines[-1] == "ok"
        assert (tmp_path / "p" / "root" / ".bashrc").read_text().endswith("more\n")

    run(with_sandbox(tmp_path / "p", spec(), body))


def test_env_home_wins_over_the_default(tmp_path: Path) -> None:
    cspec = spec(env={"HOME": "/home/kx"}, run_as_user=1000, mounts=[Mount(tmp_path / "h", "/home/kx")])

    async def body(sb: Sandbox) -> None:
        rc, out, _ = await sh(sb, 'echo "$HOME"; cd && touch .x && pwd')
        assert (rc, out) == (0, "/home/kx\n/home/kx\n")

    run(with_sandbox(tmp_path / "p", cspec, body))


def test_volume_is_shared_with_the_host_dir(tmp_path: Path) -> None:
    vol, ro = tmp_path / "vol", tmp_path / "ro"
    ro.mkdir()
    (ro / "given").write_text("from host\n")
    cspec = spec(mounts=[Mount(vol, "/workspace"), Mount(ro, "/config", read_only=True)])

    async def body(sb: Sandbox) -> None:
        assert (await sh(sb, "echo from pod > /workspace/out"))[0] == 0
        assert (vol / "out").read_text() == "from pod\n"
        (vol / "in").write_text("from host\n")
        assert (await sh(sb, "cat /workspace/in /config/given"))[1] == "from host\nfrom host\n"
        assert (await sh(sb, "touch /config/nope"))[0] != 0
        assert not (ro / "nope").exists()

    run(with_sandbox(tmp_path / "p", cspec, body))


def test_read_only_root_refuses_writes_outside_mounts(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    cspec = spec(read_only_root=True, mounts=[Mount(vol, "/workspace")])

    async def body(sb: Sandbox) -> None:
        for path in ("/new-file", "/tmp/x", "/root/x", "/var/tmp/x", "/usr/x"):
            rc, _, err = await sh(sb, f"touch {path}")
            assert rc != 0, path
            assert "Read-only file system" in err, path
        assert (await sh(sb, "touch /workspace/ok"))[0] == 0
        assert (vol / "ok").exists()

    run(with_sandbox(tmp_path / "p", cspec, body))


def test_read_only_root_with_a_tmp_mount_has_a_writable_tmp(tmp_path: Path) -> None:
    cspec = spec(read_only_root=True, mounts=[Mount(tmp_path / "tmp", "/tmp")])

    async def body(sb: Sandbox) -> None:
        assert (await sh(sb, "touch /tmp/x"))[0] == 0
        assert (tmp_path / "tmp" / "x").exists()
        assert (await sh(sb, "mkdir /y"))[0] != 0

    run(with_sandbox(tmp_path / "p", cspec, body))


def test_writable_root_by_default(tmp_path: Path) -> None:
    async def body(sb: Sandbox) -> None:
        rc, out, _ = await sh(sb, "mkdir /app && touch /app/x /tmp/y && stat -c %a /tmp && echo ok")
        assert (rc, out) == (0, "1777\nok\n")
        assert (await sh(sb, "touch /usr/x"))[0] != 0  # the host's /usr stays untouched

    run(with_sandbox(tmp_path / "p", spec(), body))


def test_bwrap_failure_raises_sandbox_error(tmp_path: Path) -> None:
    cspec = spec(mounts=[Mount(tmp_path / "vol", "/usr/share/not-here")])
    with pytest.raises(SandboxError, match="bwrap"):
        run(Sandbox.start("p", tmp_path / "p", cspec))


def test_start_and_exec_are_cheap(tmp_path: Path) -> None:
    """Pod start is on every benchmark's path; a regression to seconds would show here."""

    async def main() -> tuple[float, float]:
        warm = await Sandbox.start("warm", tmp_path / "warm", spec("busybox"))  # image trees
        await warm.kill()
        t0 = time.perf_counter()
        sb = await Sandbox.start("p", tmp_path / "p", spec())
        started = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            for _ in range(5):
                assert (await ex(sb, ["true"]))[0] == 0
            return started, (time.perf_counter() - t0) / 5
        finally:
            await sb.kill()

    started, per_exec = run(main())
    assert started < 0.5
    assert per_exec < 0.25
