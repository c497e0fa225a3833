"""Cluster access and pod hardening through the real kubectl.

Token never on argv (scanned in /proc while a block runs) and never in errors or logs; the private
kubeconfig is 0600 and gone after stop(); TLS is verified by default, a CA bundle (file or PEM) is
accepted, skipping verification is an explicit opt-in (a TLS-terminating proxy with a throw-away
self-signed certificate in front of the emulator); kubectl exiting 0 without the completion
marker (a proxy truncates stdout); the restricted Pod Security profile admits the default pod and
refuses hardened=False; read-only root filesystem; the egress NetworkPolicy; runtimeClassName;
the in-cluster ownerReference.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory
from kx_proxy import Proxy, make_certificate

from kubectl_executor import (
    CodeBlock,
    ForbiddenError,
    KubectlError,
    KubernetesCommandLineCodeExecutor,
    OutcomeUnknownError,
    TransientError,
)
from kubectl_executor._cluster.labels import OWNER_ID_LABEL
from kubectl_executor._cluster.retry import RetryPolicy

pytestmark = pytest.mark.integration


@pytest.fixture
def policy(waits: list[float]) -> RetryPolicy:
    return RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, sleep=waits.append)


def token_mode(cluster: Cluster, url: str, token: str, **extra: Any) -> dict[str, Any]:
    """Executor options for bearer-token mode against ``url`` (no kubeconfig of the user's)."""
    return {**cluster.executor_kwargs(), "kubeconfig": None, "context": None, "remote_control_plane": url,
            "kube_token": token, **extra}  # fmt: skip


def processes_mentioning(needle: bytes, *, files: tuple[str, ...] = ("cmdline",)) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for name in files:
            try:
                data = Path(f"/proc/{entry}/{name}").read_bytes()
            except OSError:
                continue
            if needle in data:
                found.append((int(entry), name))
    return found


def kubectl_cmdlines(pod: str) -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"kubectl" in raw.split(b"\0")[0] and pod.encode() in raw:
                lines.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return lines


# -- the token ------------------------------------------------------------------------------------


def test_token_never_on_argv_and_kubeconfig_private_and_removed(
    cluster: Cluster, emulator: Any, executor_factory: ExecutorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = f"kx-token-{secrets.token_hex(16)}"
    ex = executor_factory(**token_mode(cluster, emulator.url, token))
    kubeconfig = ex.kubectl.kubeconfig_path
    assert kubeconfig is not None
    info = os.stat(kubeconfig)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
    assert stat.S_IMODE(os.stat(os.path.dirname(kubeconfig)).st_mode) == 0o700
    assert token in Path(kubeconfig).read_text()  # where it lives, and only there

    ready = threading.Event()
    result: list[Any] = []
    code = "import os, time\nprint('ready', flush=True)\nwhile not os.path.exists('/tmp/go'):\n    time.sleep(0.05)\n"

    def run() -> None:
        result.append(ex.execute_code_blocks([CodeBlock(code, "python")], on_output=lambda s, c: ready.set()))

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert ready.wait(60), "the block did not start"
        running = kubectl_cmdlines(ex.pod_name)
        leaks = processes_mentioning(token.encode(), files=("cmdline", "environ"))
    finally:
        cluster.run("exec", "-n", cluster.namespace, ex.pod_name, "--", "touch", "/tmp/go")
        runner.join(60)
    assert any(" exec " in line for line in running), running  # the scan saw the call in flight
    assert all(f"--kubeconfig={kubeconfig}" in line for line in running)
    assert leaks == []
    assert result and result[0].exit_code == 0

    # an error path: kubectl's failure text and argv in the exception, and every log record
    emulator.faults.fail_requests(f"/pods/{ex.pod_name}$", 403, method="GET", count=1)
    with pytest.raises(ForbiddenError) as failure:
        ex.is_pod_running_with_image()
    assert token not in str(failure.value) and token not in " ".join(failure.value.argv)
    assert all(token not in r.getMessage() for r in caplog.records)
    assert any("kubectl" in r.getMessage() for r in caplog.records)  # debug logs were on

    ex.stop()
    assert not os.path.exists(kubeconfig) and not os.path.exists(os.path.dirname(kubeconfig))


# -- TLS --------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


@pytest.fixture
def tls_proxy(emulator: Any, certificate: tuple[Path, Path]) -> Iterator[Proxy]:
    with Proxy((emulator.host, emulator.port), certificate=certificate) as proxy:
        yield proxy


def test_tls_is_verified_by_default(
    cluster: Cluster, tls_proxy: Proxy, policy: RetryPolicy, emulator: Any
) -> None:
    before = [p["metadata"]["name"] for p in cluster.pods()]
    forwarded = tls_proxy.forwarded
    with pytest.raises(KubectlError) as info:
        KubernetesCommandLineCodeExecutor(**token_mode(cluster, tls_proxy.url, "t0ken", retry=policy))
    assert "certificate" in str(info.value)  # x509: certificate signed by unknown authority
    # ... and says what to pass (TLS stays verified; the seed silently turned it off)
    message = info.value.message
    assert "certificate_authority=" in message and "insecure_skip_tls_verify=True" in message
    assert "kube-root-ca.crt" in message and "certificate-authority-data" in message
    assert tls_proxy.forwarded == forwarded  # the handshake failed: no request got through
    assert [p["metadata"]["name"] for p in cluster.pods()] == before


def test_certificate_failure_is_not_retried(
    cluster: Cluster, tls_proxy: Proxy, policy: RetryPolicy, waits: list[float]
) -> None:
    ex = KubernetesCommandLineCodeExecutor(
        **token_mode(cluster, tls_proxy.url, "t0ken", retry=policy, start=False)
    )
    try:
        with pytest.raises(KubectlError, match="certificate") as info:
            ex.is_pod_running_with_image()  # kubectl get: "Unable to connect to the server: tls: ..."
        assert not isinstance(info.value, TransientError)
        assert waits == []
    finally:
        ex.stop()


@pytest.mark.parametrize("form", ["path", "pem", "insecure"])
def test_ca_bundle_or_explicit_skip_works(
    cluster: Cluster,
    tls_proxy: Proxy,
    certificate: tuple[Path, Path],
    executor_factory: ExecutorFactory,
    form: str,
) -> None:
    cert = certificate[0]
    extra: dict[str, Any] = {
        "path": {"certificate_authority": str(cert)},
        "pem": {"certificate_authority": cert.read_text()},
        "insecure": {"insecure_skip_tls_verify": True},
    }[form]
    ex = executor_factory(**token_mode(cluster, tls_proxy.url, "t0ken", **extra))
    result = ex.execute_code_blocks([CodeBlock("print('over tls')", "python")])  # exec WebSocket too
    assert (result.exit_code, result.stdout) == (0, "over tls\n")
    assert tls_proxy.forwarded >= 2
    config = json.loads(Path(ex.kubectl.kubeconfig_path or "").read_text())
    cluster_entry = config["clusters"][0]["cluster"]
    assert cluster_entry.get("insecure-skip-tls-verify", False) is (form == "insecure")


def test_a_different_ca_is_refused(
    cluster: Cluster, tls_proxy: Proxy, tmp_path: Path, policy: RetryPolicy
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    wrong, _ = make_certificate(other)
    with pytest.raises(KubectlError, match="certificate"):
        KubernetesCommandLineCodeExecutor(
            **token_mode(cluster, tls_proxy.url, "t0ken", certificate_authority=str(wrong), retry=policy)
        )


# -- kubectl exits 0 but the marker never came ---------------------------------------------------------


def test_kubectl_exit_0_without_the_marker_is_outcome_unknown(
    cluster: Cluster, emulator: Any, executor_factory: ExecutorFactory, tmp_path: Path
) -> None:
    with Proxy((emulator.host, emulator.port)) as proxy:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "via-proxy.yaml", namespace=cluster.namespace)
        text = kubeconfig.read_text().replace(emulator.url, proxy.url)
        kubeconfig.write_text(text)
        ex = executor_factory(kubeconfig=str(kubeconfig), context=None)
        execs = emulator.exec_count(ex.pod_name, cluster.namespace)
        proxy.truncate_exec_stdout()
        code = "open('side-effects.txt', 'a').write('ran\\n')\nprint('partial output')\n"
        with pytest.raises(OutcomeUnknownError, match=r"kubectl exit code 0") as info:
            ex.execute_code_blocks([CodeBlock(code, "python")])
        assert proxy.truncated == 1
        assert info.value.stdout == b"partial output\n"
        assert emulator.exec_count(ex.pod_name, cluster.namespace) - execs == 1  # never re-run
        count = cluster.run("exec", "-n", cluster.namespace, ex.pod_name, "--", "cat", "side-effects.txt")
        assert count.stdout == b"ran\n"
        ex.stop()


# -- Pod Security: restricted ------------------------------------------------------------------------


@pytest.fixture
def restricted_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"kx-restricted-{secrets.token_hex(3)}"
    cluster.run("create", "namespace", name)
    cluster.run("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    cluster.run("delete", "namespace", name, "--wait=false", check=False)


def test_restricted_namespace_admits_the_default_pod_and_refuses_an_unhardened_one(
    cluster: Cluster, restricted_namespace: str, executor_factory: ExecutorFactory
) -> None:
    ex = executor_factory(namespace=restricted_namespace)
    result = ex.execute_code_blocks([CodeBlock("import os; print(os.getuid())", "python")])
    assert (result.exit_code, result.stdout) == (0, "1000\n")
    with pytest.raises(ForbiddenError, match=r'violates PodSecurity "restricted:latest"') as info:
        executor_factory(namespace=restricted_namespace, hardened=False)
    assert "allowPrivilegeEscalation" in str(info.value) and "runAsNonRoot" in str(info.value)
    pods = json.loads(cluster.run("get", "pods", "-n", restricted_namespace, "-o", "json").stdout)["items"]
    assert [p["metadata"]["name"] for p in pods] == [ex.pod_name]  # the refused one left nothing


# -- read-only root filesystem, runtimeClassName ----------------------------------------------------


def test_read_only_root_filesystem_keeps_work_dir_tmp_and_home_writable(
    cluster: Cluster, executor_factory: ExecutorFactory
) -> None:
    ex = executor_factory(read_only_root_filesystem=True)
    pod = json.loads(cluster.run("get", "pod", ex.pod_name, "-n", cluster.namespace, "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    probe = (
        'for d in / /usr /etc "$HOME" /tmp .; do\n'
        '  if touch "$d/kx-probe" 2>/dev/null; then echo "$d writable"; else echo "$d read-only"; fi\n'
        "done\n"
    )
    result = ex.execute_code_blocks([CodeBlock(probe, "sh")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "/ read-only",
        "/usr read-only",
        "/etc read-only",
        "/home/kx writable",
        "/tmp writable",
        ". writable",
    ]
    # python runs, pip's cache dir and the run logs have somewhere to go
    big = ex.execute_code_blocks([CodeBlock("print('y' * 5_000_000)", "python")])
    assert big.exit_code == 0 and big.truncated and big.log_files


def test_runtime_class_is_set_on_the_pod(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    if cluster.emulator is None:
        pytest.skip("a real cluster needs that RuntimeClass installed")
    ex = executor_factory(runtime_class_name="gvisor", start=False)
    assert ex.manifest()["spec"]["runtimeClassName"] == "gvisor"
    ex.start()
    pod = json.loads(cluster.run("get", "pod", ex.pod_name, "-n", cluster.namespace, "-o", "json").stdout)
    assert pod["spec"]["runtimeClassName"] == "gvisor"


# -- the egress NetworkPolicy ----------------------------------------------------------------------------


def test_network_policy_lives_and_dies_with_the_pod(
    cluster: Cluster, executor_factory: ExecutorFactory
) -> None:
    ex = executor_factory(network_policy=True)
    policy = json.loads(
        cluster.run("get", "networkpolicy", ex.pod_name, "-n", cluster.namespace, "-o", "json").stdout
    )
    pod = json.loads(cluster.run("get", "pod", ex.pod_name, "-n", cluster.namespace, "-o", "json").stdout)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == {OWNER_ID_LABEL: ex.owner_id}
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())  # it selects our pod
    assert policy["spec"]["policyTypes"] == ["Egress"] and policy["spec"].get("egress", []) == []
    (owner,) = policy["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", ex.pod_name, pod["metadata"]["uid"])
    assert ex.execute_code_blocks([CodeBlock("print('still runs')", "python")]).stdout == "still runs\n"
    ex.restart()  # a new pod, a new policy; the old one is gone
    names = (
        cluster.run("get", "networkpolicies", "-n", cluster.namespace, "-o", "name").stdout.decode().split()
    )
    assert names == [f"networkpolicy.networking.k8s.io/{ex.pod_name}"]
    ex.stop()
    names = (
        cluster.run("get", "networkpolicies", "-n", cluster.namespace, "-o", "name").stdout.decode().split()
    )
    assert names == []


def test_no_network_policy_unless_asked(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    executor_factory()
    assert cluster.run("get", "networkpolicies", "-n", cluster.namespace, "-o", "name").stdout == b""


# -- in-cluster ownerReference ------------------------------------------------------------------------------


@pytest.fixture
def caller_pod(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """A pod standing for the agent that runs the library in-cluster."""
    name = f"agent-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": {"containers": [{"name": "agent", "image": cluster.image, "command": ["sleep", "3600"]}]},
    }
    made = json.loads(
        cluster.run("apply", "-f", "-", "-o", "json", input=json.dumps(manifest).encode()).stdout
    )
    yield made
    cluster.run("delete", "pod", name, "-n", cluster.namespace, "--wait=false", check=False)


def test_in_cluster_the_callers_pod_owns_ours(
    cluster: Cluster,
    caller_pod: dict[str, Any],
    executor_factory: ExecutorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Detected from the host name plus KUBERNETES_SERVICE_HOST, looked up with our kubectl."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("HOSTNAME", caller_pod["metadata"]["name"])
    for key in ("POD_NAME", "POD_NAMESPACE", "POD_UID"):
        monkeypatch.delenv(key, raising=False)
    ex = executor_factory()
    pod = json.loads(cluster.run("get", "pod", ex.pod_name, "-n", cluster.namespace, "-o", "json").stdout)
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Pod",
        caller_pod["metadata"]["name"],
        caller_pod["metadata"]["uid"],
    )
    assert owner["blockOwnerDeletion"] is False


def test_in_cluster_downward_api_and_namespace_rules(
    cluster: Cluster,
    caller_pod: dict[str, Any],
    executor_factory: ExecutorFactory,
    restricted_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meta = caller_pod["metadata"]
    monkeypatch.setenv("POD_NAME", meta["name"])
    monkeypatch.setenv("POD_NAMESPACE", cluster.namespace)
    monkeypatch.setenv("POD_UID", meta["uid"])
    same = executor_factory()
    owners = json.loads(
        cluster.run("get", "pod", same.pod_name, "-n", cluster.namespace, "-o", "json").stdout
    )["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == [meta["uid"]]
    # another namespace: an ownerReference cannot cross it, so none (auto) or an error (True)
    other = executor_factory(namespace=restricted_namespace)
    got = json.loads(
        cluster.run("get", "pod", other.pod_name, "-n", restricted_namespace, "-o", "json").stdout
    )
    assert "ownerReferences" not in got["metadata"]
    with pytest.raises(ValueError, match="cannot cross namespaces"):
        executor_factory(namespace=restricted_namespace, owner_reference=True)
    off = executor_factory(owner_reference=False)
    got = json.loads(cluster.run("get", "pod", off.pod_name, "-n", cluster.namespace, "-o", "json").stdout)
    assert "ownerReferences" not in got["metadata"]
