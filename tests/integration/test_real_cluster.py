"""What only a real cluster can answer: the kubelet's image pulls, the memory cgroup, the garbage
collector, Pod Security admission. Skipped, with the reason, on the emulator (run them with
fixtures/cluster/up and ``KX_TEST_CONTEXT``, as .ci/test does)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import CodeBlock, PodStartError, Resources

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
