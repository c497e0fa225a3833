"""How a pod that will never run is described: the kubelet's own words, and what to do about them."""

from __future__ import annotations

from typing import Any

from kubectl_executor._cluster.models import Pod
from kubectl_executor._cluster.pod import start_failure

# What kube-apiserver 1.35 + containerd 1.6 + runc 1.1 report for a distroless image (no /bin/sh).
RUNC_NO_SH = (
    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc "
    'create failed: unable to start container process: exec: "/bin/sh": stat /bin/sh: no such file '
    "or directory: unknown"
)


def pod(phase: str, terminated: dict[str, Any]) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": "kx-1", "namespace": "ns"},
            "status": {
                "phase": phase,
                "containerStatuses": [{"name": "executor", "state": {"terminated": terminated}}],
            },
        }
    )


def test_an_image_without_sh_says_so_whatever_the_phase() -> None:
    for phase in ("Pending", "Running", "Failed"):
        term = {"exitCode": 128, "reason": "StartError", "message": RUNC_NO_SH}
        found = start_failure(pod(phase, term))
        assert found is not None
        reason, message = found
        assert reason == "NoShell", phase
        assert "the image has no /bin/sh" in message and "distroless" in message
        assert RUNC_NO_SH in message  # the runtime's own words stay


def test_another_exit_keeps_the_runtimes_message() -> None:
    found = start_failure(pod("Running", {"exitCode": 1, "reason": "Error", "message": "boom"}))
    assert found == ("ContainerExited", "container executor exited (Error, exit code 1): boom")
    assert start_failure(pod("Running", {"exitCode": 1, "reason": "Error"})) == (
        "ContainerExited",
        "container executor exited (Error, exit code 1)",
    )
