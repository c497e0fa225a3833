"""The command line as users run it: a process, the real kubectl, the emulator (or a real cluster)."""

from __future__ import annotations

import json
import os
import pty
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kx_cluster import Cluster

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def cli_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The cluster reaches the CLI only through its documented KUBECTL_EXECUTOR_* variables."""
    env = {**os.environ, **cluster.env}
    env.update(
        KUBECTL_EXECUTOR_KUBECTL=cluster.kubectl,
        KUBECTL_EXECUTOR_NAMESPACE=cluster.namespace,
        KUBECTL_EXECUTOR_IMAGE=cluster.image,
    )
    if cluster.kubeconfig:
        env["KUBECTL_EXECUTOR_KUBECONFIG"] = cluster.kubeconfig
    if cluster.context:
        env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
    env.update(extra)
    return env


def kx(
    cluster: Cluster, *args: str, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubectl_executor", *args],
        input=input,
        capture_output=True,
        text=True,
        env=cli_env(cluster, **env),
        timeout=240,
        check=False,
    )


def pod_names(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def test_exec_passes_the_exit_code_and_streams_and_deletes_its_pod(cluster: Cluster) -> None:
    before = pod_names(cluster)
    done = kx(
        cluster, "exec", "-c", "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nsys.exit(7)"
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout == "to out\n"
    assert done.stderr == "to err\n"
    assert pod_names(cluster) == before


def test_run_a_file_and_stdin_with_json_output(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text('echo "uid=$(id -u) home=$HOME"\n')
    done = kx(cluster, "run", str(script), "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["exit_code"] == 0 and result["stdout"].startswith("uid=")
    assert result["code_file"].endswith(".sh")
    piped = kx(cluster, "run", "-", "--lang", "python", input="print(sum(range(10)))\n")
    assert (piped.returncode, piped.stdout) == (0, "45\n")


def test_flags_override_the_environment(cluster: Cluster) -> None:
    done = kx(
        cluster,
        "exec",
        "-c",
        "x",
        "--print-manifest",
        "--image",
        "example/flag:1",
        KUBECTL_EXECUTOR_IMAGE="example/env:1",
    )
    assert json.loads(done.stdout)["spec"]["containers"][0]["image"] == "example/flag:1"


def test_printed_manifest_is_admitted_by_the_server(cluster: Cluster) -> None:
    done = kx(cluster, "exec", "-c", "x", "--print-manifest")
    assert done.returncode == 0
    manifest = json.loads(done.stdout)
    dry = cluster.run(
        "apply", "--dry-run=server", "-n", cluster.namespace, "-f", "-", input=done.stdout.encode()
    )
    assert dry.returncode == 0
    assert manifest["metadata"]["name"] not in pod_names(cluster)


def test_timeout_exits_124_with_a_note(cluster: Cluster) -> None:
    done = kx(
        cluster, "exec", "--timeout", "2", "-c", "import time\nprint('started', flush=True)\ntime.sleep(60)"
    )
    assert done.returncode == 124
    assert done.stdout == "started\n"
    assert "longer than 2s" in done.stderr


def test_a_pod_that_cannot_start_is_125_with_the_clusters_reason(cluster: Cluster) -> None:
    if cluster.emulator is None:
        pytest.skip("needs the emulator's fail/<reason> images")
    before = pod_names(cluster)
    done = kx(cluster, "exec", "-c", "x", "--image", "fail/imagepullbackoff")
    assert done.returncode == 125
    assert "ImagePullBackOff" in done.stderr
    assert pod_names(cluster) == before


def test_usage_and_settings_errors_exit_2(cluster: Cluster) -> None:
    assert kx(cluster, "exec").returncode == 2
    bad = kx(cluster, "exec", "-c", "x", KUBECTL_EXECUTOR_TIMEOUT="zero")
    assert bad.returncode == 2 and "KUBECTL_EXECUTOR_TIMEOUT" in bad.stderr


def test_missing_kubectl_exits_127(cluster: Cluster, tmp_path: Path) -> None:
    done = kx(cluster, "exec", "-c", "x", KUBECTL_EXECUTOR_KUBECTL=str(tmp_path / "missing"))
    assert done.returncode == 127 and "kubectl-executor[kubectl]" in done.stderr


def test_up_exec_cp_ls_down_on_a_long_lived_pod(cluster: Cluster) -> None:
    name = f"box-{secrets.token_hex(3)}"
    up = kx(cluster, "up", name, "-o", "json")
    assert up.returncode == 0, up.stderr
    try:
        assert json.loads(up.stdout)["ready"] is True
        listed = {p["name"]: p for p in json.loads(kx(cluster, "ls", "-o", "json").stdout)}
        assert listed[name]["kind"] == "long-lived"
        # State persists between separate CLI runs in the same pod.
        assert (
            kx(cluster, "exec", "--pod", name, "-c", "open('/workspace/note', 'w').write('kept')").returncode
            == 0
        )
        read = kx(cluster, "exec", "--pod", name, "--lang", "sh", "-c", "cat /workspace/note")
        assert (read.returncode, read.stdout) == (0, "kept")
        again = kx(cluster, "up", name)
        assert again.returncode == 0
    finally:
        down = kx(cluster, "down", name, "--wait")
    assert down.returncode == 0, down.stderr
    assert name not in pod_names(cluster)


def test_cp_both_ways_and_call_on_a_long_lived_pod(cluster: Cluster, tmp_path: Path) -> None:
    name = f"box-{secrets.token_hex(3)}"
    blob = bytes(range(256)) * 64
    local = tmp_path / "src"
    (local / "pkg").mkdir(parents=True)
    (local / "data.bin").write_bytes(blob)
    (local / "pkg" / "__init__.py").write_text("")
    (local / "pkg" / "calc.py").write_text("def mul(a, b):\n    print('multiplying')\n    return a * b\n")
    assert kx(cluster, "up", name).returncode == 0
    try:
        put = kx(cluster, "cp", str(local / "data.bin"), f"{name}:in/copy.bin", "-o", "json")
        assert put.returncode == 0, put.stderr
        assert json.loads(put.stdout)["files"] == ["/workspace/in/copy.bin"]
        assert kx(cluster, "cp", str(local / "pkg"), f"{name}:pkg").returncode == 0
        size = kx(
            cluster,
            "exec",
            "--pod",
            name,
            "-c",
            "import os; print(os.path.getsize('/workspace/in/copy.bin'))",
        )
        assert size.stdout == f"{len(blob)}\n"

        got = tmp_path / "back.bin"
        assert kx(cluster, "cp", f"{name}:in/copy.bin", str(got)).returncode == 0
        assert got.read_bytes() == blob
        tree = tmp_path / "tree"
        assert kx(cluster, "cp", f"{name}:pkg", str(tree)).returncode == 0
        assert (tree / "calc.py").read_text() == (local / "pkg" / "calc.py").read_text()
        missing = kx(cluster, "cp", f"{name}:no/such/file", str(tmp_path / "x"))
        assert missing.returncode == 125 and "does not exist" in missing.stderr

        called = kx(cluster, "call", "pkg.calc:mul", "--args", '{"a": 6, "b": 7}', "--pod", name)
        assert (called.returncode, called.stdout) == (0, "multiplying\n42\n"), called.stderr
    finally:
        assert kx(cluster, "down", name).returncode == 0


def test_call_uploads_into_a_fresh_pod(cluster: Cluster, tmp_path: Path) -> None:
    module = tmp_path / "tools.py"
    module.write_text(
        "def greet(name):\n    return {'hello': name}\n\ndef boom():\n    raise ValueError('no')\n"
    )
    before = pod_names(cluster)
    done = kx(
        cluster, "call", "tools:greet", "--args", '{"name": "pod"}', "--upload", str(module), "-o", "json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tool_result"]["value"] == {"hello": "pod"}
    failed = kx(cluster, "call", "tools:boom", "--upload", str(module))
    assert failed.returncode == 1 and "ValueError: no" in failed.stderr
    assert pod_names(cluster) == before


def test_down_refuses_pods_it_did_not_make(cluster: Cluster) -> None:
    name = f"foreign-{secrets.token_hex(3)}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": cluster.image, "command": ["sleep", "3600"]}]},
    }
    cluster.run("apply", "-n", cluster.namespace, "-f", "-", input=json.dumps(pod).encode())
    try:
        done = kx(cluster, "down", name)
        assert done.returncode == 125 and "not made by kubectl-executor" in done.stderr
        assert cluster.run("get", "pod", name, "-n", cluster.namespace, check=False).returncode == 0
    finally:
        cluster.run("delete", "pod", name, "-n", cluster.namespace, "--wait=false", check=False)


def test_progress_is_shown_only_on_a_terminal(cluster: Cluster) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kubectl_executor", "exec", "-c", "print('ok')"],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=cli_env(cluster),
            timeout=240,
            check=False,
        )
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0 and proc.stdout == b"ok\n"
    assert b"starting pod kx-" in shown
    piped = kx(cluster, "exec", "-c", "print('ok')")
    assert "starting pod" not in piped.stderr


def test_doctor_on_the_test_cluster(cluster: Cluster) -> None:
    done = kx(cluster, "doctor", "-o", "json")
    report: dict[str, Any] = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["kubectl"]["status"] in ("ok", "warn")
    assert checks["server"]["status"] == "ok"
    assert checks["context"]["detail"].endswith(f"namespace {cluster.namespace}")
    assert checks["pod manifest"]["status"] == "ok", checks["pod manifest"]
    assert checks["image"]["status"] == "ok", checks["image"]
    assert checks["run"]["status"] == "ok"
    can_i = [c for name, c in checks.items() if name.startswith("can-i ")]
    assert len(can_i) == 7
    # kubectl auth can-i POSTs a protobuf SelfSubjectAccessReview: the emulator answers it too
    assert all(c["status"] == "ok" for c in can_i), can_i
    assert done.returncode == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


def test_the_kubectl_plugin_entry_point(cluster: Cluster) -> None:
    plugin = shutil.which("kubectl-executor", path=str(BIN))
    assert plugin, f"the console script kubectl-executor is not installed in {BIN} (pip install -e .)"
    env = cli_env(cluster, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        [cluster.kubectl, "executor", "exec", "-c", "print('via kubectl')"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "via kubectl\n"), done.stderr
