"""The standalone emulator: `python -m kube_emulator` prints its kubeconfig, serves kubectl, and
cleans up its sandboxes on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from emu_helpers import pod_manifest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{p}/task"):  # children are per thread
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids += [int(k) for k in f.read().split()]
        except OSError:
            continue
        found.update(kids)
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_standalone_serves_kubectl_and_cleans_up(
    tmp_path: Path, kubectl_paths: dict[str, str | None]
) -> None:
    kubectl = kubectl_paths["1.32"] or kubectl_paths["1.37"]
    assert kubectl is not None
    cfg = tmp_path / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": str(FIXTURES)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kube_emulator",
            "--port",
            "0",
            "--kubeconfig",
            str(cfg),
            "--start-delay",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().strip() == str(cfg)
        assert proc.stdout.readline().decode().strip() == "ready"
        kenv = {
            **os.environ,
            "KUBECONFIG": str(cfg),
            "KUBECACHEDIR": str(tmp_path / "cache"),
            "HOME": str(tmp_path),
        }

        def k(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([kubectl, *args], input=data, capture_output=True, env=kenv, timeout=30)

        assert k("apply", "-f", "-", data=yaml.safe_dump(pod_manifest("solo")).encode()).returncode == 0
        assert k("wait", "--for=condition=Ready", "pod/solo", "--timeout=10s").returncode == 0
        assert k("exec", "solo", "--", "echo", "hi").stdout == b"hi\n"
        children = _descendants(proc.pid)
        assert children, "the pod's sandbox should run under the emulator process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert [p for p in children if _alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
