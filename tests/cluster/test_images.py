"""The registry-less images of fixtures/cluster/images, imported into a private containerd and run.

Opt-in, because it needs root, Debian's containerd and runc, and builds the images on first use:

    KX_TEST_IMAGES=1 .venv/bin/python -m pytest tests/cluster/test_images.py -q

Processes run the way a restricted pod runs them: as uid/gid 1000, no capabilities, no new
privileges, with a world-writable emptyDir-like work dir, on the rootfs containerd unpacked from the
imported image (`ctr images mount`), and the image config's Env; the argv given is the pod's `command`
(it replaces the image's Entrypoint and Cmd, as in Kubernetes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "fixtures" / "cluster" / "images"
NS = "k8s.io"
PYTHON = "docker.io/library/python:3-slim"
BUSYBOX = "docker.io/library/busybox:latest"
DISTROLESS = "gcr.io/distroless/python3-debian12:latest"
PAUSE = "registry.k8s.io/pause:3.10"
TIMEOUT = 120  # seconds for one ctr command: a bound on a hang, not a synchronisation

pytestmark = pytest.mark.skipif(
    os.environ.get("KX_TEST_IMAGES") != "1",
    reason="opt-in: KX_TEST_IMAGES=1 (root, containerd and runc from Debian; builds the images)",
)


@dataclass
class Containerd:
    """A private containerd: its socket and state directory."""

    sock: str
    state: Path

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ctr` against this containerd in namespace k8s.io."""
        return subprocess.run(
            ["ctr", "--address", self.sock, "-n", NS, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=check,
        )

    def image_config(self, image: str) -> dict[str, object]:
        """The `config` part of the image's config blob, read back from containerd's content store."""
        digest = next(
            line.split()[2]
            for line in self.ctr("images", "ls").stdout.splitlines()
            if line.split()[0] == image
        )
        manifest = json.loads(self.ctr("content", "get", digest).stdout)
        blob = json.loads(self.ctr("content", "get", manifest["config"]["digest"]).stdout)
        config: dict[str, object] = blob["config"]
        return config


def _start_containerd(state: Path) -> tuple[subprocess.Popen[str], threading.Thread]:
    """containerd in its own directories (no CRI), returned once it says it has booted."""
    sock = str(state / "c.sock")
    config = state / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{state}/root"\n'
        f'state = "{state}/run"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
        ' "io.containerd.snapshotter.v1.zfs"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{state}/opt"\n'
    )
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log: list[str] = []
    booted = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "containerd successfully booted" in line:
                booted.set()
        booted.set()  # exited: stop waiting, the poll() below tells

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    booted.wait(TIMEOUT)
    if proc.poll() is not None or not os.path.exists(sock):
        proc.kill()
        pytest.fail("containerd did not boot:\n" + "".join(log[-30:]))
    return proc, drainer


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd with the four images imported by `fixtures/cluster/images import`."""
    if os.geteuid() != 0 or not shutil.which("containerd") or not shutil.which("runc"):
        pytest.fail("KX_TEST_IMAGES=1 needs root and `apt-get install containerd runc`")
    state = tmp_path_factory.mktemp("containerd")
    proc, drainer = _start_containerd(state)
    ctd = Containerd(str(state / "c.sock"), state)
    try:
        imported = subprocess.run(
            ["bash", str(SCRIPT), "import", "--address", str(state / "c.sock")],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert imported.returncode == 0, imported.stderr
        yield ctd
    finally:
        # a test that failed midway may leave a task behind; shims outlive containerd, so end them first
        for task in ctd.ctr("tasks", "ls", "-q", check=False).stdout.split():
            ctd.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
            ctd.ctr("tasks", "delete", "--force", task, check=False)
        for container in ctd.ctr("containers", "ls", "-q", check=False).stdout.split():
            ctd.ctr("containers", "delete", container, check=False)
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drainer.join(TIMEOUT)  # containerd gone: its stderr is at EOF
        assert proc.stderr is not None
        proc.stderr.close()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        leftover = [m for m in mounts if m.startswith(str(state))]
        for mount in reversed(leftover):  # a run_pod that timed out never reached its unmount
            subprocess.run(["umount", mount], check=False)
        shutil.rmtree(state, ignore_errors=True)
        assert not leftover, f"mounts left behind: {leftover}"


def run_pod(
    ctd: Containerd, image: str, command: list[str] | None, args: list[str] | None = None, uid: int = 1000
) -> subprocess.CompletedProcess[str]:
    """Run one process from IMAGE as a restricted pod's container would, and return its result.

    As in a pod spec, `command` replaces the image's Entrypoint and `args` its Cmd."""
    cid = "kx-" + uuid.uuid4().hex[:12]
    rootfs = ctd.state / f"{cid}.rootfs"
    work = ctd.state / f"{cid}.work"
    rootfs.mkdir()
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # what the kubelet gives an emptyDir
    config = ctd.image_config(image)
    entrypoint = command if command is not None else cast("list[str]", config.get("Entrypoint") or [])
    argv = [*entrypoint, *(args if args is not None else cast("list[str]", config.get("Cmd") or []))]
    spec = json.loads(ctd.ctr("oci", "spec").stdout)
    spec["root"] = {"path": str(rootfs), "readonly": False}
    spec["process"].update(
        {
            "args": argv,
            "env": config.get("Env", []),
            "cwd": "/work",
            "user": {"uid": uid, "gid": uid},
            "terminal": False,
            "noNewPrivileges": True,
            "capabilities": {},
        }
    )
    spec["mounts"].append(
        {"destination": "/work", "type": "bind", "source": str(work), "options": ["rbind", "rw"]}
    )
    spec_file = ctd.state / f"{cid}.json"
    spec_file.write_text(json.dumps(spec))
    ctd.ctr("images", "mount", "--rw", image, str(rootfs))
    try:
        return ctd.ctr("run", "--rm", "--config", str(spec_file), cid, check=False)
    finally:
        ctd.ctr("images", "unmount", "--rm", str(rootfs))


def test_python_slim_runs_python_and_sh_as_uid_1000(containerd: Containerd) -> None:
    result = run_pod(containerd, PYTHON, ["python3", "-c", "import os; print(1, os.getuid(), os.getcwd())"])
    assert (result.returncode, result.stdout) == (0, "1 1000 /work\n"), result.stderr
    version = run_pod(containerd, PYTHON, ["python", "--version"])
    assert version.returncode == 0 and version.stdout.startswith("Python 3."), version.stderr
    script = (
        "set -e; echo data > f; cat f; stat -c %a /tmp; touch /tmp/t; timeout 1 true;"
        " echo x | sha256sum; tar --help >/dev/null; command -v ps || echo no-ps"
    )
    shell = run_pod(containerd, PYTHON, ["sh", "-c", script])
    x_sum = hashlib.sha256(b"x\n").hexdigest()
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split("\n") == ["data", "1777", f"{x_sum}  -", "no-ps", ""]


def test_python_slim_stdlib_extensions_import(containerd: Containerd) -> None:
    code = "import ctypes, hashlib, json, lzma, bz2, sqlite3, ssl, zlib, subprocess, venv; print('ok')"
    result = run_pod(containerd, PYTHON, ["python3", "-c", code])
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


def test_python_slim_default_command_is_python3(containerd: Containerd) -> None:
    config = containerd.image_config(PYTHON)
    assert (config["Cmd"], config.get("Entrypoint")) == (["python3"], None)
    assert "LANG=C.UTF-8" in cast("list[str]", config["Env"])


def test_busybox_has_the_applets_and_no_python(containerd: Containerd) -> None:
    script = "tar --help 2>/dev/null; timeout 1 true; echo x | sha256sum; stat -c %a /tmp; command -v python3"
    result = run_pod(containerd, BUSYBOX, ["sh", "-c", script + " || echo no-python"])
    x_sum = hashlib.sha256(b"x\n").hexdigest()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [f"{x_sum}  -", "1777", "no-python", ""]
    files = run_pod(containerd, BUSYBOX, ["sh", "-c", "echo hi > f && cat /work/f && id -u"])
    assert (files.returncode, files.stdout) == (0, "hi\n1000\n"), files.stderr


def test_distroless_runs_python_as_uid_1000_and_has_no_shell(containerd: Containerd) -> None:
    code = (
        "import os, ctypes, json, sqlite3, ssl, zlib; open('f', 'w').write('x');"
        "print(os.getuid(), [p for p in ('/bin/sh', '/usr/bin/sh', '/bin/busybox') if os.path.exists(p)])"
    )
    result = run_pod(containerd, DISTROLESS, ["python3", "-c", code])
    assert (result.returncode, result.stdout) == (0, "1000 []\n"), result.stderr
    # args only: the image's Entrypoint (python3.11) runs them
    assert containerd.image_config(DISTROLESS)["Entrypoint"] == ["/usr/bin/python3.11"]
    entry = run_pod(containerd, DISTROLESS, None, ["-c", "import sys; print(sys.executable)"])
    assert (entry.returncode, entry.stdout) == (0, "/usr/bin/python3.11\n"), entry.stderr
    shell = run_pod(containerd, DISTROLESS, ["/bin/sh", "-c", "true"])
    assert shell.returncode != 0
    assert "no such file or directory" in shell.stderr.lower(), shell.stderr


def _handles_sigterm(pid_file: Path) -> bool:
    """Whether the task in PID_FILE is the pause binary with its SIGTERM handler installed (SigCgt)."""
    try:
        pid = int(pid_file.read_text())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False  # not written yet, or not started yet
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return comm == "pause" and bool(caught & (1 << (signal.SIGTERM - 1)))


def test_pause_runs_until_sigterm_and_exits_0(containerd: Containerd) -> None:
    """The sandbox image: started as its image user, it sleeps until SIGTERM, then exits 0.

    PID 1 of a PID namespace ignores SIGTERM unless it handles it, so the exit proves the handler.
    The signal goes once the handler is in place (read from /proc: the condition, not a delay)."""
    assert containerd.image_config(PAUSE)["User"] == "65535:65535"
    version = containerd.ctr("run", "--rm", PAUSE, "kx-pause-v-" + uuid.uuid4().hex[:8], "/pause", "-v")
    assert version.stdout.startswith("pause.c v3.10")
    cid = "kx-pause-" + uuid.uuid4().hex[:8]
    pid_file = containerd.state / f"{cid}.pid"
    argv = [
        "ctr",
        "--address",
        containerd.sock,
        "-n",
        NS,
        "run",
        "--rm",
        "--pid-file",
        str(pid_file),
        PAUSE,
        cid,
    ]
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        try:
            deadline = time.monotonic() + TIMEOUT
            while not _handles_sigterm(pid_file):
                assert run.poll() is None, run.communicate()
                assert time.monotonic() < deadline, "pause never installed its SIGTERM handler"
                time.sleep(0.05)
            uid = Path(f"/proc/{pid_file.read_text().strip()}/status").read_text().split("Uid:")[1].split()[0]
            assert uid == "65535"
            containerd.ctr("tasks", "kill", "--signal", "SIGTERM", cid)
            _, stderr = run.communicate(timeout=TIMEOUT)
            assert run.returncode == 0, stderr
            assert "Shutting down, got signal" in stderr
        finally:
            if run.poll() is None:
                containerd.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False)
                run.communicate(timeout=TIMEOUT)


def test_build_is_cached(containerd: Containerd) -> None:
    """A second build with the same inputs reuses the tarballs: nothing is rewritten."""
    cache = Path(os.environ.get("KX_CLUSTER_CACHE", "/var/cache/kx-cluster")) / "images"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.tar")}
    result = subprocess.run(["bash", str(SCRIPT), "build"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.tar")} == before
    assert len(before) == 4
