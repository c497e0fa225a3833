"""``doctor``: what kubectl, the cluster and RBAC allow, and the Role this tool needs."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import click  # a core dependency: the command works on the base install

from .._cluster.kubectl import Kubectl
from .._cluster.manifest import CONTAINER
from .._exec.results import CodeBlock
from ..defaults import IMAGE
from ..errors import (
    KubectlExecutorError,
    KubectlNotFoundError,
)
from ..settings import Settings
from .base import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    Common,
    access_options,
    command,
    echo_json,
    make_executor,
    make_kubectl,
    output_options,
    progress,
)

# (verb, resource, subresource, why): every call the library makes.
REQUIRED_ACCESS: list[tuple[str, str, str, str]] = [
    ("create", "pods", "", "create the pod (kubectl apply)"),
    ("get", "pods", "", "read the pod (apply, attach)"),
    ("list", "pods", "", "reuse, ls, gc"),
    ("watch", "pods", "", "wait until the pod is ready"),
    ("delete", "pods", "", "stop(), down, gc"),
    ("create", "pods", "exec", "run code and copy files (exec over SPDY, and WebSocket on 1.31+)"),
    ("get", "pods", "exec", "run code (exec over WebSocket, kubectl 1.30+ on older servers)"),
]

# Grants the README's Role has that not every cluster needs: a missing one is a warning, not a failure.
OPTIONAL_ACCESS = {
    "get pods/exec": (
        "API servers from 1.35 on authorize an exec over WebSocket as create pods/exec (measured: "
        "every feature works without it there); older ones need it for exec over WebSocket"
    ),
}

SUPPORTED_KUBECTL = ((1, 30), (1, 37))


def role_yaml(namespace: str) -> str:
    """The minimal Role (and a RoleBinding to fill in) for everything the library does."""
    return f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: kubectl-executor
  namespace: {namespace}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["create", "get", "list", "watch", "delete"]
  - apiGroups: [""]
    resources: ["pods/exec"]
    verbs: ["create", "get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubectl-executor
  namespace: {namespace}
subjects:
  - kind: User  # or ServiceAccount / Group: whoever runs kubectl-executor
    name: REPLACE-ME
    apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: kubectl-executor
  apiGroup: rbac.authorization.k8s.io
"""


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str


def _version_tuple(git_version: str) -> tuple[int, int] | None:
    m = re.match(r"^v?(\d+)\.(\d+)", git_version)
    return (int(m.group(1)), int(m.group(2))) if m else None


IMAGE_TOOLS_SCRIPT = (
    'for t in sh timeout tar python3 python; do if command -v "$t" >/dev/null 2>&1; '
    'then echo "$t yes"; else echo "$t no"; fi; done'
)


class Doctor:
    """The checks, each a method that appends to ``checks``; I/O only through the library."""

    def __init__(self, common: Common, *, skip_pod: bool) -> None:
        self.common = common
        self.skip_pod = skip_pod
        self.checks: list[Check] = []
        self.namespace = common.settings.namespace or "default"
        self.missing_access: list[str] = []

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))
        if not self.common.json and not self.common.quiet:
            mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[status]
            click.echo(f"[{mark}] {name}: {detail}")

    def run(self) -> int:
        try:
            kubectl = make_kubectl(self.common)
        except KubectlNotFoundError as exc:
            self.add("kubectl", "fail", str(exc))
            return self.finish()
        try:
            self.check_kubectl(kubectl)
            self.check_context(kubectl)
            reachable = self.check_server(kubectl)
            if reachable:
                self.check_access(kubectl)
                executor = make_executor(self.common)
                try:
                    manifest = executor.manifest()
                finally:
                    executor.stop()
                self.check_dry_run(kubectl, manifest)
                self.check_image()
        finally:
            kubectl.close()
        return self.finish()

    def finish(self) -> int:
        failed = any(c.status == "fail" for c in self.checks)
        if self.common.json:
            echo_json(
                {
                    "ok": not failed,
                    "checks": [asdict(c) for c in self.checks],
                    "missing_access": self.missing_access,
                    "role": role_yaml(self.namespace) if self.missing_access else None,
                }
            )
        elif self.missing_access:
            click.echo(
                f"\nMissing access: {', '.join(self.missing_access)}. The minimal Role to grant "
                f"(kubectl apply -f -):\n"
            )
            click.echo(role_yaml(self.namespace), nl=False)
        return EXIT_CHECK_FAILED if failed else EXIT_OK

    def check_kubectl(self, kubectl: Kubectl) -> None:
        done = kubectl.run(["version", "--client", "-o", "json"], check=False)
        try:
            version = json.loads(done.stdout)["clientVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            self.add("kubectl", "fail", f"{kubectl.path} did not report its version")
            return
        parsed = _version_tuple(version)
        low, high = SUPPORTED_KUBECTL
        if parsed is None or not low <= parsed <= high:
            self.add(
                "kubectl",
                "warn",
                f"{kubectl.path} {version}: outside the tested range {low[0]}.{low[1]}-{high[0]}.{high[1]}",
            )
        else:
            self.add("kubectl", "ok", f"{kubectl.path} {version}")

    def check_context(self, kubectl: Kubectl) -> None:
        s = self.common.settings
        if s.remote_control_plane:
            context = f"bearer-token mode ({s.remote_control_plane})"
        elif s.context:
            context = s.context
        else:
            done = kubectl.run(["config", "current-context"], check=False)
            context = done.stdout.decode(errors="replace").strip()
            if done.returncode != 0 or not context:
                self.add("context", "fail", "no current context: set one, or pass --context / --kubeconfig")
                return
        if not s.namespace:
            done = kubectl.run(
                ["config", "view", "--minify", "-o", "jsonpath={.contexts[0].context.namespace}"], check=False
            )
            self.namespace = done.stdout.decode(errors="replace").strip() or "default"
        self.add("context", "ok", f"context {context}, namespace {self.namespace}")

    def check_server(self, kubectl: Kubectl) -> bool:
        done = kubectl.run(["version", "-o", "json"], check=False, idempotent=False, timeout=30)
        try:
            version = json.loads(done.stdout)["serverVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            self.add(
                "server", "fail", f"cannot reach the API server: {detail[-1] if detail else 'no answer'}"
            )
            return False
        self.add("server", "ok", f"API server {version}")
        return True

    def check_access(self, kubectl: Kubectl) -> None:
        for verb, resource, sub, why in REQUIRED_ACCESS:
            args = ["auth", "can-i", verb, resource]
            if sub:
                args.append(f"--subresource={sub}")
            what = f"{verb} {resource}{'/' + sub if sub else ''}"
            done = kubectl.run(args, check=False, timeout=30)
            answer = done.stdout.decode(errors="replace").strip().lower()
            if answer.startswith("yes"):
                self.add(f"can-i {what}", "ok", why)
            elif answer.startswith("no") and what in OPTIONAL_ACCESS:
                self.add(f"can-i {what}", "warn", f"not allowed; {OPTIONAL_ACCESS[what]}")
            elif answer.startswith("no"):
                self.add(f"can-i {what}", "fail", f"not allowed; needed to {why}")
                self.missing_access.append(what)
            else:
                err = done.stderr.decode(errors="replace").strip().splitlines()
                self.add(f"can-i {what}", "warn", f"could not check ({err[-1] if err else 'no answer'})")

    def check_dry_run(self, kubectl: Kubectl, manifest: dict[str, Any]) -> None:
        done = kubectl.run(
            ["apply", "--dry-run=server", "-f", "-", "-o", "name"],
            stdin=json.dumps(manifest).encode(),
            check=False,
        )
        if done.returncode == 0:
            self.add(
                "pod manifest", "ok", "admitted by a server-side dry run (Pod Security, quotas, webhooks)"
            )
        else:
            err = done.stderr.decode(errors="replace").strip()
            self.add("pod manifest", "fail", f"rejected by a server-side dry run: {err}")

    def check_image(self) -> None:
        image = self.common.settings.image or IMAGE
        if self.skip_pod:
            self.add("image", "skip", "--skip-pod: not starting a test pod")
            return
        if self.missing_access:
            self.add("image", "skip", "missing access: not starting a test pod")
            return
        executor = make_executor(self.common)
        try:
            with progress(self.common, f"starting test pod {executor.pod_name}"):
                executor.start()
            done = executor.kubectl.run(
                ["exec", executor.pod_name, "-c", CONTAINER, "--", "sh", "-c", IMAGE_TOOLS_SCRIPT],
                check=False,
                timeout=60,
            )
            found = dict(
                line.split(" ", 1)
                for line in done.stdout.decode(errors="replace").splitlines()
                if " " in line
            )
            if done.returncode != 0 or not found:
                err = done.stderr.decode(errors="replace").strip().splitlines()
                self.add("image", "fail", f"{image}: cannot run sh in it ({err[0] if err else 'no output'})")
                return
            missing = [t for t in ("sh", "timeout", "tar") if found.get(t) != "yes"]
            has_python = "yes" in (found.get("python3"), found.get("python"))
            if missing:
                self.add(
                    "image", "fail", f"{image}: missing {', '.join(missing)} (needed by the in-pod runner)"
                )
            elif not has_python:
                self.add(
                    "image", "warn", f"{image}: has sh, timeout, tar; no python (python blocks will fail)"
                )
            else:
                self.add("image", "ok", f"{image}: has sh, timeout, tar, python")
            result = executor.execute_code_blocks([CodeBlock("echo kx-roundtrip", "sh")])
            if result.exit_code == 0 and result.stdout.strip() == "kx-roundtrip":
                self.add("run", "ok", f"a code block ran in pod {executor.pod_name}")
            else:
                self.add(
                    "run", "fail", f"a code block failed: exit {result.exit_code}: {result.output.strip()}"
                )
        except KubectlExecutorError as exc:
            self.add("image", "fail", str(exc).splitlines()[0])
        finally:
            executor.stop()


@click.command(epilog="Exit codes: 0 all checks passed (warnings allowed), 1 a check failed, 2 usage.")
@click.option("--skip-pod", is_flag=True, help="do not start a test pod (no image check)")
@access_options
@click.option("--image", envvar=Settings.env_name("image"), show_envvar=True, help="image to check")
@output_options
@command
def doctor(common: Common, skip_pod: bool) -> int:
    """Check kubectl, cluster access, RBAC, the pod manifest and the image."""
    return Doctor(common, skip_pod=skip_pod).run()
