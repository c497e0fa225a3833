"""Shim for the seed README's examples (tests/external/shims/seed_readme_examples.py runs them).

The examples are written for a user's cluster: example 1 calls bearer-token mode with an https
URL, no CA and ``KUBE_TOKEN`` from the environment; example 5 uses ``~/.kube/config`` (or
$KUBECONFIG). This conftest provides exactly that: an https endpoint (the real cluster's, or a TLS
proxy in front of the emulator) whose CA kubectl trusts as a system CA (SSL_CERT_FILE), a token,
a kubeconfig, and kubectl as $KUBECTL. The fixture ``readme_cluster`` is the cluster.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kx_external import ExternalCluster


@pytest.fixture(scope="session")
def readme_cluster() -> Iterator[ExternalCluster]:
    tmp = Path(tempfile.mkdtemp(prefix="kx-seed-readme-"))
    cluster = ExternalCluster.start(tmp)
    saved = dict(os.environ)
    with contextlib.ExitStack() as stack:
        url, ca_pem = stack.enter_context(cluster.tls_front(tmp / "tls"))
        os.environ.update(cluster.env)
        os.environ.update(cluster.trust_env(ca_pem, tmp / "tls"))
        os.environ.update(
            KX_API_SERVER=url,
            KX_NAMESPACE=cluster.namespace,
            KUBE_TOKEN=cluster.token,
            KUBECTL=cluster.kubectl,
            KUBECONFIG=cluster.user_kubeconfig(tmp / "user"),
        )
        try:
            yield cluster
        finally:
            os.environ.clear()
            os.environ.update(saved)
    leaked = cluster.stop()
    assert not leaked, f"pods leaked by the README examples: {leaked}"
