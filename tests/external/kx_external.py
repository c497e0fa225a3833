"""Where external suites run: the local emulator (default) or a real cluster, for their shims.

``ExternalCluster.start(tmp)`` gives a fresh namespace reachable with the real kubectl, and, for
suites that use the seed's bearer-token mode, an API server URL and a token. ``tmp`` (the shim's
scratch directory: kubeconfigs, a token's CA bundle) becomes the cluster's: ``stop()`` removes it.

* emulator (default): ``fixtures/kube_emulator`` started in this process, as
  tests/integration/conftest.py does; it accepts any bearer token. ``tls_front()`` puts a
  TLS-terminating proxy (tests/integration/kx_proxy.py) with a throw-away certificate in front of
  it, for suites that need an ``https://`` URL.
* ``KX_TEST_CONTEXT`` (+ ``KX_TEST_KUBECONFIG``): that cluster. The token is made with
  ``kubectl create token`` for a service account bound to the ``edit`` ClusterRole in the test
  namespace; the URL is the context's server.

``trust_env()`` gives the environment under which kubectl trusts the cluster's CA as if it were a
system CA (``SSL_CERT_FILE``, read by Go's crypto/x509): for suites that call bearer-token mode
with an https URL and no CA, as the seed's users do. ``stop()`` deletes the namespace, reports
leaked pods, and stops what was started.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANAGED = "app.kubernetes.io/managed-by=kubectl-executor"


def kubectl_path() -> str:
    chosen = os.environ.get("KX_TEST_KUBECTL") or shutil.which("kubectl")
    if not chosen:
        raise RuntimeError("no kubectl: install it or set KX_TEST_KUBECTL (external suites never fake it)")
    return chosen


@dataclass
class ExternalCluster:
    kubectl: str
    kubeconfig: str | None
    context: str | None
    namespace: str
    image: str
    url: str
    token: str
    ca_pem: str | None = None  # the real cluster's CA (None on the emulator: plain http)
    emulator: Any = None
    env: dict[str, str] = field(default_factory=dict)  # for kubectl (discovery cache)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @classmethod
    def start(cls, tmp: Path) -> ExternalCluster:
        kubectl = kubectl_path()
        namespace = f"kx-ext-{secrets.token_hex(3)}"
        image = os.environ.get("KX_TEST_IMAGE", "python:3-slim")
        context = os.environ.get("KX_TEST_CONTEXT")
        tmp.mkdir(parents=True, exist_ok=True)
        if context:
            found = cls(kubectl, os.environ.get("KX_TEST_KUBECONFIG"), context, namespace, image, "", "")
            found._stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            found.run("create", "namespace", namespace)
            found._token_for_real_cluster()
            return found
        from kube_emulator import Emulator

        emulator = Emulator().start()
        kubeconfig = str(emulator.write_kubeconfig(tmp / "kubeconfig"))
        env = {"KUBECACHEDIR": str(tmp / "kube-cache")}
        found = cls(kubectl, kubeconfig, None, namespace, image, emulator.url, f"kx-{secrets.token_hex(16)}",
                    emulator=emulator, env=env)  # fmt: skip
        found._stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        found._stack.callback(emulator.stop)
        found.run("create", "namespace", namespace)
        return found

    def executor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for our executors on this cluster (kubeconfig mode)."""
        return {"kubectl": self.kubectl, "kubeconfig": self.kubeconfig, "context": self.context,
                "namespace": self.namespace, "image": self.image}  # fmt: skip

    def kubectl_argv(self, *args: str) -> list[str]:
        argv = [self.kubectl]
        if self.kubeconfig:
            argv.append(f"--kubeconfig={self.kubeconfig}")
        if self.context:
            argv.append(f"--context={self.context}")
        return [*argv, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.kubectl_argv(*args),
            capture_output=True,
            text=True,
            check=check,
            env={**os.environ, **self.env},
            timeout=120,
        )

    def _token_for_real_cluster(self) -> None:
        sa = "kx-external"
        self.run("create", "serviceaccount", sa, "-n", self.namespace)
        self.run("create", "rolebinding", sa, "--clusterrole=edit", f"--serviceaccount={self.namespace}:{sa}",
                 "-n", self.namespace)  # fmt: skip
        self.token = self.run("create", "token", sa, "-n", self.namespace, "--duration=2h").stdout.strip()
        view = json.loads(self.run("config", "view", "--raw", "--minify", "-o", "json").stdout)
        entry = view["clusters"][0]["cluster"]
        self.url = entry["server"]
        if "certificate-authority-data" in entry:
            self.ca_pem = base64.b64decode(entry["certificate-authority-data"]).decode()
        elif "certificate-authority" in entry:
            self.ca_pem = Path(entry["certificate-authority"]).read_text()

    @contextlib.contextmanager
    def tls_front(self, tmp: Path) -> Iterator[tuple[str, str]]:
        """(https URL, CA PEM) of the API server: the real cluster's, or a TLS proxy to the emulator."""
        if self.emulator is None:
            if not self.url.startswith("https://") or self.ca_pem is None:
                raise RuntimeError(f"the cluster's server {self.url} is not https with a known CA")
            yield self.url, self.ca_pem
            return
        from kx_proxy import Proxy, make_certificate

        tmp.mkdir(parents=True, exist_ok=True)
        cert, key = make_certificate(tmp)
        with Proxy((self.emulator.host, self.emulator.port), certificate=(cert, key)) as proxy:
            yield proxy.url, cert.read_text()

    @staticmethod
    def trust_env(ca_pem: str, tmp: Path) -> dict[str, str]:
        """Environment in which kubectl trusts ca_pem as a system CA (Go reads SSL_CERT_FILE)."""
        tmp.mkdir(parents=True, exist_ok=True)
        bundle = tmp / "trusted-ca.pem"
        bundle.write_text(ca_pem)
        return {"SSL_CERT_FILE": str(bundle)}

    def user_kubeconfig(self, tmp: Path) -> str:
        """A kubeconfig whose current context is the test cluster, for code that reads $KUBECONFIG."""
        if self.emulator is not None and self.kubeconfig:
            return self.kubeconfig
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "kubeconfig"
        path.write_text(self.run("config", "view", "--raw", "--minify", "--flatten").stdout)
        path.chmod(0o600)
        return str(path)

    def leaked_pods(self) -> list[str]:
        done = self.run("get", "pods", "-n", self.namespace, "-l", MANAGED, "-o", "json", check=False)
        if done.returncode != 0:
            return [f"(could not list pods: {done.stderr.strip()})"]
        items = json.loads(done.stdout)["items"]
        return [p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")]

    def stop(self) -> list[str]:
        """Delete the namespace and stop what we started; returns the pods that were left."""
        try:
            leaked = self.leaked_pods()
            self.run("delete", "namespace", self.namespace, "--wait=false", check=False)
        finally:
            self._stack.close()
        return leaked
