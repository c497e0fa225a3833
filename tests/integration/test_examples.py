"""The examples run as users run them (each exits 0 only when its results are right)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kx_cluster import Cluster

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["plain.py", "tool_functions.py", "autogen_agent.py", "jupyter_notebook.py"])
def test_example_runs(cluster: Cluster, name: str) -> None:
    env = {**os.environ, "KUBECTL_EXECUTOR_IMAGE": cluster.image, "KUBECTL_EXECUTOR_KUBECTL": cluster.kubectl}
    if cluster.emulator is not None:
        env["KX_USE_EMULATOR"] = "1"  # its own emulator, as a user without a cluster gets
    else:
        env["KUBECTL_EXECUTOR_NAMESPACE"] = cluster.namespace
        if cluster.kubeconfig:
            env["KUBECONFIG"] = cluster.kubeconfig
        if cluster.context:
            env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("pod deleted.")
