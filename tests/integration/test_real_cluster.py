"""What only a real cluster can answer: the kubelet's image pulls, the memory cgroup, the garbage
collector, Pod Security admission, RBAC (doctor and ForbiddenError for a ServiceAccount with the
README's Role, less one grant at a time), bearer-token mode with a TokenRequest token and the
cluster CA, the busybox and plot images, the container's main process killed, and the kubelet and
containerd restarted under a running block (fixtures/cluster/restart). Skipped, with the reason, on the emulator (run them with
fixtures/cluster/up and ``KX_TEST_CONTEXT``, as .ci/test does)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import (
    CodeBlock,
    ForbiddenError,
    KubectlError,
    KubernetesCommandLineCodeExecutor,
    OutcomeUnknownError,
    PodStartError,
    Resources,
)
from kubectl_executor.gc import collect_garbage

pytestmark = pytest.mark.integration


@pytest.fixture
def real(cluster: Cluster) -> Cluster:
    if cluster.emulator is not None:
        pytest.skip("needs a real cluster (kubelet, containerd, controllers): set KX_TEST_CONTEXT")
    return cluster


@pytest.fixture
def restricted_namespace(real: Cluster) -> Iterator[str]:
    """A namespace whose Pod Security level is enforced as ``restricted``."""
    name = f"kx-restricted-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    real.run("apply", "-f", "-", input=json.dumps(manifest).encode())
    yield name
    real.run("delete", "namespace", name, "--wait=false", check=False)


def test_an_image_that_cannot_be_pulled_fails_with_the_kubelets_reason(
    real: Cluster, executor_factory: ExecutorFactory
) -> None:
    # No registry is reachable: the kubelet's pull fails for real, and the start fails on that
    # reason instead of waiting out the startup timeout.
    with pytest.raises(PodStartError) as caught:
        executor_factory(image="docker.io/library/kx-no-such-image:0", startup_timeout=240)
    assert caught.value.reason in ("ErrImagePull", "ImagePullBackOff")
    assert "kx-no-such-image" in caught.value.message
    real.wait_gone("pod", caught.value.pod, timeout=60)  # what it created is deleted


def test_a_block_over_its_memory_limit_is_oom_killed_and_the_next_block_runs(
    real: Cluster, executor_factory: ExecutorFactory
) -> None:
    ex = executor_factory(resources=Resources(memory_request="64Mi", memory_limit="128Mi"))
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
    result = ex.execute_code_blocks([CodeBlock(hog, "python")])
    assert result.exit_code == 137  # SIGKILL from the memory cgroup's OOM killer
    after = ex.execute_code_blocks([CodeBlock("print('still here')", "python")])
    assert after.exit_code == 0 and after.stdout == "still here\n"


def test_the_garbage_collector_deletes_our_pod_with_its_owner(
    real: Cluster, executor_factory: ExecutorFactory
) -> None:
    owner = f"kx-owner-{secrets.token_hex(3)}"
    real.run("create", "configmap", owner, "-n", real.namespace)
    made = real.get_object("configmap", owner)
    assert made is not None
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": made["metadata"]["uid"]}
    ex = executor_factory(owner_reference=ref)
    assert ex.execute_code_blocks([CodeBlock("print(1)", "python")]).stdout == "1\n"
    pod = real.get_object("pod", ex.pod_name)
    assert pod is not None and pod["metadata"]["ownerReferences"][0]["uid"] == ref["uid"]
    real.run("delete", "configmap", owner, "-n", real.namespace)
    real.wait_gone("pod", ex.pod_name, timeout=90)  # the real garbage collector, not the library


def test_a_restricted_pod_security_namespace_admits_the_default_pod(
    real: Cluster, restricted_namespace: str, executor_factory: ExecutorFactory
) -> None:
    ex = executor_factory(namespace=restricted_namespace)
    result = ex.execute_code_blocks([CodeBlock("import os\nprint(os.getuid())", "python")])
    assert result.exit_code == 0 and result.stdout == "1000\n"


# -- RBAC and bearer-token mode: a ServiceAccount with exactly the README's Role ------------------

ROOT = Path(__file__).resolve().parents[2]
# (verb, resource) of the README's Role; REQUIRED_ACCESS in cli.py names them the same way
README_GRANTS = [
    ("create", "pods"),
    ("get", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("get", "pods/exec"),
]


def readme_role() -> dict[str, Any]:
    """The Role the README tells users to grant, parsed from the README itself."""
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and doc.get("kind") == "Role":
            return doc
    raise AssertionError("README.md has no Role")


@dataclass
class Identity:
    """Bearer-token access as a ServiceAccount: the API server's URL, a TokenRequest token, the CA."""

    server: str
    token: str
    ca_pem: str
    namespace: str
    name: str

    def executor_kwargs(self, **extra: Any) -> dict[str, Any]:
        return {
            "remote_control_plane": self.server,
            "kube_token": self.token,
            "certificate_authority": self.ca_pem,
            "namespace": self.namespace,
            **extra,
        }


@pytest.fixture
def service_account(real: Cluster) -> Iterator[Callable[..., Identity]]:
    """Make a ServiceAccount bound to the README's Role, less the ``drop`` grant."""
    made: list[str] = []

    def make(drop: tuple[str, str] | None = None) -> Identity:
        name = f"kx-sa-{secrets.token_hex(3)}"
        role = readme_role()
        role["metadata"] = {"name": name, "namespace": real.namespace}
        for rule in role["rules"]:
            if drop and rule["resources"] == [drop[1]]:
                rule["verbs"] = [v for v in rule["verbs"] if v != drop[0]]
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": real.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": real.namespace}],
        }
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
        items = {"apiVersion": "v1", "kind": "List", "items": [account, role, binding]}
        real.run("apply", "-n", real.namespace, "-f", "-", input=json.dumps(items).encode())
        made.append(name)
        token = (
            real.run("create", "token", name, "-n", real.namespace, "--duration=20m").stdout.decode().strip()
        )
        view = ["config", "view", "--raw", "--minify", "-o"]
        server = real.run(*view, "jsonpath={.clusters[0].cluster.server}").stdout.decode()
        ca = real.run(*view, "jsonpath={.clusters[0].cluster.certificate-authority-data}").stdout
        assert server.startswith("https://") and ca, "the admin kubeconfig names no https server and CA"
        return Identity(server, token, base64.b64decode(ca).decode(), real.namespace, name)

    yield make
    for name in made:
        for kind in ("rolebinding", "role", "serviceaccount"):
            real.run("delete", kind, name, "-n", real.namespace, "--ignore-not-found", check=False)


def doctor(real: Cluster, who: Identity, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    """``kubectl-executor doctor -o json`` in bearer-token mode as ``who`` (no kubeconfig at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECTL_EXECUTOR_", "KUBE"))}
    env.update(
        KUBECTL_EXECUTOR_KUBECTL=real.kubectl,
        KUBECTL_EXECUTOR_REMOTE_CONTROL_PLANE=who.server,
        KUBECTL_EXECUTOR_CERTIFICATE_AUTHORITY=who.ca_pem,
        KUBECTL_EXECUTOR_NAMESPACE=who.namespace,
        KUBECTL_EXECUTOR_IMAGE=real.image,
        KUBE_TOKEN=who.token,
    )
    done = subprocess.run(
        [sys.executable, "-m", "kubectl_executor", "doctor", "-o", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    report = json.loads(done.stdout)
    return done.returncode, {c["name"]: c for c in report["checks"]}


def test_doctor_and_every_feature_with_exactly_the_readmes_role(
    real: Cluster, service_account: Callable[..., Identity], tmp_path: Path
) -> None:
    who = service_account()
    code, checks = doctor(real, who)
    assert {f"can-i {v} {r}" for v, r in README_GRANTS} <= set(checks)
    bad = {n: c for n, c in checks.items() if c["status"] != "ok" and n != "kubectl"}
    assert bad == {} and code == 0, bad  # the kubectl line may warn about its version only
    # the features, through that ServiceAccount's token, TLS verified against the cluster CA
    with KubernetesCommandLineCodeExecutor(**who.executor_kwargs(image=real.image)) as ex:
        config = json.loads(Path(str(ex.kubectl.kubeconfig_path)).read_text())
        assert "certificate-authority-data" in config["clusters"][0]["cluster"]
        assert "insecure-skip-tls-verify" not in config["clusters"][0]["cluster"]
        assert ex.execute_code_blocks([CodeBlock("print(6 * 7)", "python")]).output == "42\n"
        path = ex.upload_file_content("in/data.bin", bytes(range(256)))
        assert ex.download_file(path, tmp_path / "data.bin").read_bytes() == bytes(range(256))
        collect_garbage(ex.kubectl, dry_run=True)  # gc lists pods: granted, no ForbiddenError
    with KubernetesCommandLineCodeExecutor(**who.executor_kwargs(image=real.image, session=True)) as ex:
        for _ in range(2):
            assert ex.execute_code_blocks([CodeBlock("echo in-session", "sh")]).output == "in-session\n"


@pytest.mark.parametrize("drop", README_GRANTS, ids=[f"{v}-{r}" for v, r in README_GRANTS])
def test_each_grant_removed_gives_its_forbidden_error_and_doctor_line(
    real: Cluster, service_account: Callable[..., Identity], drop: tuple[str, str]
) -> None:
    who = service_account(drop)
    code, checks = doctor(real, who, "--skip-pod")
    line = checks[f"can-i {drop[0]} {drop[1]}"]
    others = {n: c["status"] for n, c in checks.items() if n.startswith("can-i ") and c is not line}
    assert set(others.values()) == {"ok"}, others
    if drop == ("get", "pods/exec"):
        # A 1.35 API server authorizes an exec over WebSocket as create: nothing needs get, so
        # doctor warns (older servers need it) and every feature still works.
        assert line["status"] == "warn" and "1.35" in line["detail"] and code == 0
        with KubernetesCommandLineCodeExecutor(**who.executor_kwargs(image=real.image, session=True)) as ex:
            assert ex.execute_code_blocks([CodeBlock("print(1)", "python")]).output == "1\n"
        return
    assert line["status"] == "fail" and line["detail"].startswith("not allowed") and code == 1
    ex = KubernetesCommandLineCodeExecutor(**who.executor_kwargs(image=real.image), start=False)
    try:
        with pytest.raises(ForbiddenError) as caught:
            if drop == ("list", "pods"):
                collect_garbage(ex.kubectl, dry_run=True)  # gc and ls list; a start does not
            else:
                ex.start()
                ex.execute_code_blocks([CodeBlock("print(1)", "python")])
                ex.stop()  # delete pods
        assert (caught.value.verb, caught.value.resource) == drop, caught.value
        assert f"(grant verb {drop[0]!r} on {drop[1]!r})" in str(caught.value)
    finally:
        if drop == ("delete", "pods"):  # give the grant back, so that stop() can delete its pod
            role = readme_role()
            role["metadata"] = {"name": who.name, "namespace": real.namespace}
            real.run("apply", "-n", real.namespace, "-f", "-", input=json.dumps(role).encode())
            deadline = time.monotonic() + 20
            while True:
                try:
                    ex.stop()
                    break
                except ForbiddenError:  # until the authorizer has the Role's new rules
                    assert time.monotonic() < deadline, "the restored Role never took effect"
                    time.sleep(0.2)
        ex.stop()


def test_bearer_token_mode_without_the_ca_says_what_to_pass(
    real: Cluster, service_account: Callable[..., Identity]
) -> None:
    who = service_account()
    kwargs = who.executor_kwargs(image=real.image, certificate_authority=None)
    with pytest.raises(KubectlError) as caught:
        KubernetesCommandLineCodeExecutor(**kwargs)
    text = str(caught.value)
    assert "x509" in text or "certificate" in text
    assert "certificate_authority=" in text and "kube-root-ca.crt" in text
    assert "insecure_skip_tls_verify=True" in text
    assert [
        (p["metadata"]["name"], p["metadata"].get("labels")) for p in real.pods()
    ] == []  # nothing was created
    # the explicit opt-out works (and is the only way TLS is not verified)
    with KubernetesCommandLineCodeExecutor(**{**kwargs, "insecure_skip_tls_verify": True}) as ex:
        assert ex.execute_code_blocks([CodeBlock("print('unverified')", "python")]).output == "unverified\n"


# -- images: busybox through the sh fallbacks; the plot image -------------------------------------


def test_busybox_runs_shell_blocks_files_timeouts_and_sessions(
    real: Cluster, executor_factory: ExecutorFactory, tmp_path: Path
) -> None:
    for session in (False, True):
        ex = executor_factory(image="busybox", session=session, timeout=2)
        done = ex.execute_code_blocks([CodeBlock("echo out; echo err >&2; exit 3", "sh")])
        assert (done.exit_code, done.stdout, done.stderr) == (3, "out\n", "err\n")
        assert ex.execute_code_blocks([CodeBlock("command -v python3 || echo none", "sh")]).stdout == "none\n"
        blob = bytes(range(256)) * 4096
        path = ex.upload_file_content("up/blob.bin", blob)
        assert ex.download_file(path, tmp_path / f"blob-{session}.bin").read_bytes() == blob
        got = ex.execute_code_blocks([CodeBlock("sha256sum up/blob.bin | cut -c1-64", "sh")]).stdout.strip()
        assert got == hashlib.sha256(blob).hexdigest()
        slow = ex.execute_code_blocks([CodeBlock("echo started; sleep 30; echo late", "sh")])
        assert (slow.exit_code, slow.timed_out) == (124, True) and "late" not in slow.output
        after = ex.execute_code_blocks([CodeBlock("ps | grep -c '[s]leep 30' || true", "sh")])
        assert after.stdout.strip() == "0"  # the timed-out block's processes are gone
        if session:
            assert ex._session is not None and ex._session.agent_kind == "sh"


def test_the_plot_image_returns_a_png(real: Cluster, executor_factory: ExecutorFactory) -> None:
    image = os.environ.get("KX_TEST_PLOT_IMAGE")
    if not image:
        pytest.skip("KX_TEST_PLOT_IMAGE names no image with matplotlib (fixtures/cluster sets it)")
    ex = executor_factory(image=image)
    code = (
        "import io, base64, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt, pandas\n"
        "pandas.Series([3, 1, 2]).plot(ax=plt.figure().gca())\nb = io.BytesIO()\n"
        "plt.savefig(b, format='png')\nprint(base64.b64encode(b.getvalue()[:8]).decode())"
    )
    done = ex.execute_code_blocks([CodeBlock(code, "python")])
    assert done.exit_code == 0 and base64.b64decode(done.stdout) == b"\x89PNG\r\n\x1a\n", done.output


# -- the node gives way: the container's main process, the kubelet, containerd --------------------

CLUSTER = ROOT / "fixtures" / "cluster"


def container_id(real: Cluster, pod: str) -> str:
    found = real.get_object("pod", pod)
    assert found is not None
    return str(found["status"]["containerStatuses"][0]["containerID"]).split("://", 1)[1]


def node_fixture(real: Cluster) -> str:
    """The state directory of fixtures/cluster, when the cluster is that one (as root)."""
    state = os.environ.get("KX_CLUSTER_STATE", "/var/lib/kx-cluster")
    if os.geteuid() != 0 or not real.node_is_this_machine() or not Path(state, "run/kubelet.pid").is_file():
        pytest.skip(
            "needs fixtures/cluster's node on this machine, as root (it signals the node's processes)"
        )
    return state


@pytest.mark.parametrize("session", [False, True], ids=["exec", "session"])
def test_the_main_process_killed_mid_block_is_outcome_unknown_then_a_fresh_pod_runs(
    real: Cluster, executor_factory: ExecutorFactory, session: bool
) -> None:
    state = node_fixture(real)
    ex = executor_factory(session=session, timeout=60)
    assert ex.execute_code_blocks([CodeBlock("open('mark', 'w').write('x')", "python")]).exit_code == 0
    first_pod, cid = ex.pod_name, container_id(real, ex.pod_name)
    sock = f"{state}/containerd/containerd.sock"

    def kill_main(stream: str, chunk: bytes) -> None:
        if b"working" in chunk:  # SIGKILL to the container's pid 1, as the runtime or OOM would
            subprocess.run(
                ["ctr", "--address", sock, "-n", "k8s.io", "task", "kill", "-s", "SIGKILL", cid], check=True
            )

    code = "import time\nprint('working', flush=True)\ntime.sleep(60)\nprint('finished')"
    with pytest.raises(OutcomeUnknownError, match="may or may not have run") as caught:
        ex.execute_code_blocks([CodeBlock(code, "python")], on_output=kill_main)
    assert "finished" not in str(caught.value)
    # The pod stays Failed (restartPolicy Never): the next block gets a fresh pod, and says so.
    after = ex.execute_code_blocks([CodeBlock("import os\nprint(os.path.exists('mark'))", "python")])
    assert after.exit_code == 0 and after.stdout == "False\n" and after.state_lost
    assert "ran in a fresh pod" in after.output and ex.pod_name != first_pod
    real.wait_gone("pod", first_pod, timeout=60)


@pytest.mark.parametrize("component", ["kubelet", "containerd"])
@pytest.mark.parametrize("session", [False, True], ids=["exec", "session"])
def test_a_node_component_restarted_mid_block(
    real: Cluster, executor_factory: ExecutorFactory, component: str, session: bool
) -> None:
    node_fixture(real)
    ex = executor_factory(session=session, timeout=60)
    assert ex.execute_code_blocks([CodeBlock("x = 1\nprint('ready')", "python")]).stdout == "ready\n"
    pod = ex.pod_name
    restarted: list[subprocess.CompletedProcess[bytes]] = []

    def restart(stream: str, chunk: bytes) -> None:
        if b"working" in chunk and not restarted:
            restarted.append(
                subprocess.run(
                    ["bash", str(CLUSTER / "restart"), component], capture_output=True, timeout=180
                )
            )

    code = "import time\nprint('working', flush=True)\ntime.sleep(3)\nprint('finished')"
    try:
        done = ex.execute_code_blocks([CodeBlock(code, "python")], on_output=restart)
    except OutcomeUnknownError as exc:  # the stream through the restarted component broke
        assert "may or may not have run" in str(exc) and "was not re-run" in str(exc)
    else:  # or it survived: then the result is the whole block's
        assert (done.exit_code, done.stdout) == (0, "working\nfinished\n")
    assert restarted and restarted[0].returncode == 0, restarted[0].stderr if restarted else "no restart"
    # the same pod serves the next blocks (its container outlived the component)
    after = ex.execute_code_blocks([CodeBlock("print('again')", "python")])
    assert after.exit_code == 0 and after.stdout == "again\n" and ex.pod_name == pod
