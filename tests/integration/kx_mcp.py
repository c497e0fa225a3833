"""Helpers of the MCP integration tests (importable as ``kx_mcp``): the real ``kubectl-executor mcp``
process, its environment for the test cluster, and the HTTP server on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from kx_cluster import Cluster

# Deterministic test files, written in the pod by run_code and re-made here to compare.
BINARY_9MIB = "import random\nopen('big.bin', 'wb').write(random.Random(9).randbytes(9 * 1024 * 1024))\n"
TEXT_4MIB = (
    "line = 'grüße, \\u00e9t\\u00e9 \"quoted\" \\\\ tab\\t 🚀\\n'\n"
    "open('big.txt', 'w', encoding='utf-8').write(line * (4 * 1024 * 1024 // len(line.encode())))\n"
)


def binary_9mib() -> bytes:
    import random

    return random.Random(9).randbytes(9 * 1024 * 1024)


def text_4mib() -> bytes:
    line = 'grüße, \u00e9t\u00e9 "quoted" \\ tab\t 🚀\n'
    return (line * (4 * 1024 * 1024 // len(line.encode()))).encode()


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("kubectl-executor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kubectl_executor"]


def server_env(cluster: Cluster) -> dict[str, str]:
    """A host's minimal environment plus the cluster access (through KUBECTL_EXECUTOR_* variables)."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "KUBECONFIG", "LANG") if k in os.environ}
    env.update(cluster.env)
    env["KUBECTL_EXECUTOR_KUBECTL"] = cluster.kubectl
    env["KUBECTL_EXECUTOR_NAMESPACE"] = cluster.namespace
    env["KUBECTL_EXECUTOR_IMAGE"] = cluster.image
    if cluster.kubeconfig:
        env["KUBECTL_EXECUTOR_KUBECONFIG"] = cluster.kubeconfig
    if cluster.context:
        env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
    return env


def pod_names(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def wait_deleted(cluster: Cluster, name: str) -> None:
    done = cluster.run(
        "wait", "--for=delete", f"pod/{name}", "-n", cluster.namespace, "--timeout=120s", check=False
    )
    assert done.returncode == 0 or b"not found" in done.stderr, done.stderr


@contextlib.contextmanager
def http_server(
    cluster: Cluster, errlog: IO[str], *flags: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The server on a free port; yields its URL (from the line it prints on stderr)."""
    proc = subprocess.Popen(
        [*server_command(), "mcp", "--transport", "http", "--port", "0", *flags],
        env=server_env(cluster),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            errlog.write(line)
            if "serving streamable HTTP on " in line:
                url = line.rsplit(" ", 1)[1].strip()
                break
        assert url, "the server did not start"
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rest = proc.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[1]
        errlog.write(rest or "")
