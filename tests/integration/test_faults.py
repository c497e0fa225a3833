"""Fault injection through the real kubectl: every line of "Fault injection" in reliability.md.

Each test injects a fault with the emulator's API, then asserts the outcome AND the counts: how
often the fault fired, how many requests or execs reached the emulator, how often the library's
retry policy waited (its ``sleep`` hook records the waits and never sleeps, so retries are
instant and no assertion depends on wall-clock time).

Hostile downloads: a `tar` planted first on the pod's PATH answers with crafted archives.
SIGKILL of the host process mid-run, then ``gc``: tests/integration/test_gc.py
(test_sigkilled_owner_mid_run_leaves_no_pod_after_gc). kubectl exiting 0 without the completion
marker needs a man in the middle: test_security.py drives it through kx_proxy.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import (
    CodeBlock,
    ExecNotStartedError,
    ForbiddenError,
    KubectlError,
    KubectlNotFoundError,
    KubernetesCommandLineCodeExecutor,
    NotFoundError,
    OutcomeUnknownError,
    TransferError,
    TransferLimits,
    TransientError,
    UnsafePathError,
)
from kubectl_executor._cluster.retry import RetryPolicy

pytestmark = pytest.mark.integration

ATTEMPTS = 4
SIDE_EFFECT = "with open('side-effects.txt', 'a') as f:\n    f.write('ran\\n')\n"
RBAC_DENIAL = (
    'pods{name} is forbidden: User "system:serviceaccount:ci:agent" cannot {verb} resource "{resource}" '
    'in API group "" in the namespace "{ns}"'
)


@pytest.fixture
def policy(waits: list[float]) -> RetryPolicy:
    return RetryPolicy(attempts=ATTEMPTS, initial_wait=0.01, max_wait=0.05, sleep=waits.append)


@pytest.fixture
def make(executor_factory: ExecutorFactory, policy: RetryPolicy) -> ExecutorFactory:
    """Executors with the instant retry policy and a known pod name (faults match on it)."""

    def build(**kwargs: Any) -> KubernetesCommandLineCodeExecutor:
        kwargs.setdefault("pod_name", f"kx-fault-{secrets.token_hex(4)}")
        kwargs.setdefault("retry", policy)
        return executor_factory(**kwargs)

    return build


def pod_path(cluster: Cluster, name: str = "") -> str:
    return f"^/api/v1/namespaces/{cluster.namespace}/pods" + (f"/{name}$" if name else "$")


def side_effects(cluster: Cluster, ex: KubernetesCommandLineCodeExecutor) -> int:
    """How many times the block's side effect happened (read with kubectl directly)."""
    done = cluster.run(
        "exec", "-n", cluster.namespace, ex.pod_name, "--", "sh", "-c",
        f"cat {ex.work_dir}/side-effects.txt 2>/dev/null || true",
    )  # fmt: skip
    return done.stdout.decode().count("ran\n")


def pod_names(cluster: Cluster) -> list[str]:
    return [p["metadata"]["name"] for p in cluster.pods()]


def pod_cmdlines(emulator: Any, cluster: Cluster, pod: str) -> list[str]:
    """Command lines of every live process in the pod, read on the host through /proc."""
    lines = []
    for pid in emulator.pod_pids(cluster.namespace, pod):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if raw:  # zombies have none
            lines.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return lines


# -- 429 / 500 / 503 on apply, get, delete ---------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_apply_is_retried_after_server_errors(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float], status: int
) -> None:
    """kubectl apply = GET (404) then POST; the POST fails twice, the third apply creates the pod."""
    name = f"kx-fault-{secrets.token_hex(4)}"
    fault = emulator.faults.fail_requests(pod_path(cluster), status, method="POST", count=2)
    posts = emulator.stats.count("POST", pod_path(cluster))
    ex = make(pod_name=name)
    assert fault.fired == 2
    assert emulator.stats.count("POST", pod_path(cluster)) - posts == 3  # 2 refused + 1 created
    assert emulator.stats.count("POST", pod_path(cluster), status=status) >= 2
    assert len(waits) == 2  # two library retries, with backoff (the hook saw a positive wait)
    assert all(w > 0 for w in waits)
    assert ex.execute_code_blocks([CodeBlock("print('up')", "python")]).stdout == "up\n"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_get_is_retried_after_server_errors(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float], status: int
) -> None:
    ex = make()
    path = pod_path(cluster, ex.pod_name)
    fault = emulator.faults.fail_requests(path, status, method="GET", count=2)
    before = emulator.stats.count("GET", path)
    assert ex.is_pod_running_with_image() == ex.pod_name
    assert fault.fired == 2
    assert emulator.stats.count("GET", path) - before == 3
    assert len(waits) == 2


@pytest.mark.parametrize("status", [429, 500, 503])
def test_delete_is_retried_after_server_errors(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float], status: int
) -> None:
    ex = make()
    path = pod_path(cluster, ex.pod_name)
    fault = emulator.faults.fail_requests(path, status, method="DELETE", count=2)
    ex.stop()
    assert fault.fired == 2
    assert emulator.stats.count("DELETE", path) == 3
    assert len(waits) == 2
    assert ex.pod_name not in pod_names(cluster)


def test_retry_after_is_honoured(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    """A 429 with Retry-After is waited out by kubectl itself (client-go, up to 10 times): the
    library's policy is not even needed, and the server saw each retry only after the delay.
    (kubectl does not print Retry-After, so once it gives up the library can only back off.)"""
    ex = make()
    path = pod_path(cluster, ex.pod_name)
    start = len(emulator.stats.requests())
    fault = emulator.faults.fail_requests(path, 429, method="GET", retry_after=1, count=2)
    assert ex.is_pod_running_with_image() == ex.pod_name
    assert fault.fired == 2
    seen = [
        r for r in emulator.stats.requests()[start:] if r.method == "GET" and r.path.endswith(ex.pod_name)
    ]
    assert [r.status for r in seen] == [429, 429, 200]
    gaps = [b.time - a.time for a, b in itertools.pairwise(seen)]
    assert all(gap >= 1.0 for gap in gaps), gaps  # server-side arrival times: the wait happened
    assert waits == []


def test_a_delay_stated_by_the_server_is_honoured_by_the_library(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    """No Retry-After header (so kubectl fails at once), but the Status message states the delay:
    the library's own retries wait at least that long (seen through the policy's sleep hook)."""
    ex = make()
    path = pod_path(cluster, ex.pod_name)
    message = "Too many requests, please try again in 2 seconds."
    fault = emulator.faults.fail_requests(path, 429, method="GET", count=2, message=message)
    assert ex.is_pod_running_with_image() == ex.pod_name
    assert fault.fired == 2
    assert len(waits) == 2 and all(w >= 2.0 for w in waits), waits


def test_persistent_429_gives_up_after_the_bound(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    path = pod_path(cluster, ex.pod_name)
    emulator.faults.fail_requests(path, 429, method="GET", retry_after=0, count=None)
    before = emulator.stats.count("GET", path)
    with pytest.raises(TransientError, match="TooManyRequests"):
        ex.is_pod_running_with_image()
    # each library attempt is one kubectl run, which itself tried 1 + 10 times (Retry-After)
    assert emulator.stats.count("GET", path) - before == ATTEMPTS * 11
    assert len(waits) == ATTEMPTS - 1


@pytest.mark.parametrize(("method", "status"), [("GET", 500), ("DELETE", 503), ("POST", 500)])
def test_persistent_server_error_is_a_transient_error_after_the_bound(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float], method: str, status: int
) -> None:
    name = f"kx-fault-{secrets.token_hex(4)}"
    path = pod_path(cluster) if method == "POST" else pod_path(cluster, name)
    before = emulator.stats.count(method, path, status=status)
    if method == "POST":
        emulator.faults.fail_requests(path, status, method=method, count=None)
        with pytest.raises(TransientError) as info:
            make(pod_name=name)
        assert name not in pod_names(cluster)
    else:
        ex = make(pod_name=name)
        emulator.faults.fail_requests(path, status, method=method, count=None)
        with pytest.raises(TransientError) as info:
            ex.is_pod_running_with_image() if method == "GET" else ex.stop()
    assert emulator.stats.count(method, path, status=status) - before == ATTEMPTS
    assert len(waits) == ATTEMPTS - 1
    assert info.value.returncode == 1 and info.value.stderr  # kubectl's own words are kept
    emulator.faults.clear()
    cluster.run("delete", "pod", name, "-n", cluster.namespace, "--ignore-not-found", "--wait=false")


def test_stop_can_be_retried_after_a_failed_delete(
    cluster: Cluster, emulator: Any, make: ExecutorFactory
) -> None:
    ex = make()
    emulator.faults.fail_requests(pod_path(cluster, ex.pod_name), 500, method="DELETE", count=None)
    try:
        with pytest.raises(TransientError):
            ex.stop()
        emulator.faults.clear()
        ex.stop()
        assert ex.pod_name not in pod_names(cluster)
    finally:
        emulator.faults.clear()
        cluster.run(
            "delete", "pod", ex.pod_name, "-n", cluster.namespace, "--ignore-not-found", "--wait=false"
        )


# -- exec refused before it started ---------------------------------------------------------------------


def test_refused_exec_upgrade_is_retried_and_the_block_runs_once(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    fault = emulator.faults.refuse_exec(pod=ex.pod_name, count=2)  # "error dialing backend ..."
    result = ex.execute_code_blocks([CodeBlock(SIDE_EFFECT + "print('done')", "python")])
    assert result.exit_code == 0 and result.stdout == "done\n"
    assert fault.fired == 2
    assert len(waits) == 2
    assert emulator.exec_count(ex.pod_name, cluster.namespace) - execs == 1  # one process started
    assert side_effects(cluster, ex) == 1


def test_exec_refused_for_good_is_not_started_and_nothing_ran(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    fault = emulator.faults.refuse_exec(pod=ex.pod_name, count=None)
    with pytest.raises(ExecNotStartedError, match="error dialing backend"):
        ex.execute_code_blocks([CodeBlock(SIDE_EFFECT, "python")])
    assert fault.fired == ATTEMPTS
    assert len(waits) == ATTEMPTS - 1
    emulator.faults.clear()
    assert emulator.exec_count(ex.pod_name, cluster.namespace) == execs
    assert side_effects(cluster, ex) == 0


# -- stream lost after the start: outcome unknown, never re-run --------------------------------------


def test_stream_dropped_mid_run_is_outcome_unknown_and_not_rerun(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    code = SIDE_EFFECT + "import time\nprint('x' * 4000, flush=True)\ntime.sleep(30)\n"
    fault = emulator.faults.drop_exec(after_bytes=1000, pod=ex.pod_name)
    with pytest.raises(OutcomeUnknownError, match="may or may not have run") as info:
        ex.execute_code_blocks([CodeBlock(code, "python")])
    assert fault.fired == 1
    assert waits == []
    assert emulator.exec_count(ex.pod_name, cluster.namespace) - execs == 1
    assert side_effects(cluster, ex) == 1
    assert info.value.stdout.startswith(b"x")  # what did arrive is handed over


def test_a_dropped_stream_stops_the_block_in_the_pod(
    cluster: Cluster, emulator: Any, make: ExecutorFactory
) -> None:
    """Nobody can learn the outcome any more: the in-pod runner stops the block (and what it
    started) when its client is gone, long before the block's 120 s deadline."""
    ex = make(timeout=120)
    code = (
        "import subprocess, time\nsubprocess.Popen(['sleep', '3007'])\n"
        "print('x' * 4000, flush=True)\ntime.sleep(100)\n"
    )
    emulator.faults.drop_exec(after_bytes=1000, pod=ex.pod_name)
    with pytest.raises(OutcomeUnknownError):
        ex.execute_code_blocks([CodeBlock(code, "python")])
    deadline = time.monotonic() + 20
    left = ["?"]
    while left and time.monotonic() < deadline:
        left = [
            c
            for c in pod_cmdlines(emulator, cluster, ex.pod_name)
            if "sleep 3007" in c or "in-pod runner" in c
        ]
        time.sleep(0.1)  # polling the pod's process list, bounded
    assert left == [], left


def test_status_frame_lost_but_marker_arrived_gives_the_real_exit_code(
    cluster: Cluster, emulator: Any, make: ExecutorFactory
) -> None:
    """kubectl fails (no status frame) but the completion marker is there: the marker decides."""
    ex = make()
    fault = emulator.faults.drop_exec(before_status=True, pod=ex.pod_name)
    result = ex.execute_code_blocks([CodeBlock(SIDE_EFFECT + "print('out')\nraise SystemExit(3)", "python")])
    assert fault.fired == 1
    assert (result.exit_code, result.stdout) == (3, "out\n")
    assert side_effects(cluster, ex) == 1


def test_runner_killed_mid_run_is_outcome_unknown(
    cluster: Cluster, emulator: Any, make: ExecutorFactory
) -> None:
    """The exec ends (kubectl reports exit 137) without the marker: outcome unknown, never re-run."""
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    # Walk up to the in-pod runner (`sh -c <run.sh> kx`) and kill it mid-run.
    code = SIDE_EFFECT + (
        "import os, signal, time\n"
        "def parent(pid):\n"
        "    return int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "def runner(pid):\n"
        "    return pid > 1 and b'in-pod runner' in open(f'/proc/{pid}/cmdline', 'rb').read()\n"
        "pid = os.getpid()\n"
        "while not (runner(pid) and not runner(parent(pid))):  # the topmost: subshells look alike\n"
        "    pid = parent(pid)\n"
        "os.kill(pid, signal.SIGKILL)\n"
        "time.sleep(5)\n"
    )
    with pytest.raises(OutcomeUnknownError, match="without its completion marker"):
        ex.execute_code_blocks([CodeBlock(code, "python")])
    assert emulator.exec_count(ex.pod_name, cluster.namespace) - execs == 1
    assert side_effects(cluster, ex) == 1


# -- user output that looks like kubectl's --------------------------------------------------------------


def test_kubectl_like_user_output_is_data(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    lines = [
        'Error from server (NotFound): pods "x" not found',
        "command terminated with exit code 7",
        "error: unable to upgrade connection: error dialing backend: connection refused",
        "Error from server (TooManyRequests): Too many requests, please try again later.",
    ]
    code = (
        SIDE_EFFECT
        + "import sys\n"
        + "".join(f"print({line!r}); print({line!r}, file=sys.stderr)\n" for line in lines)
        + "sys.exit(1)\n"
    )
    result = ex.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == lines and result.stderr.splitlines() == lines
    assert not result.timed_out
    assert waits == []  # not mistaken for a refused exec, so not retried
    assert emulator.exec_count(ex.pod_name, cluster.namespace) - execs == 1
    assert side_effects(cluster, ex) == 1


# -- deadlines -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "code", "leftover"),
    [
        ("python", "while True:\n    pass\n", "tmp_code_"),
        ("sh", "sleep 301 &\nsleep 302 &\necho started\nwhile :; do :; done\n", "sleep 30"),
        (
            "python",
            "import subprocess\nsubprocess.Popen(['sleep', '303'])\nwhile True:\n    pass\n",
            "sleep 303",
        ),
    ],
    ids=["python-loop", "sh-forks-sleep", "python-spawns-sleep"],
)
def test_runaway_code_is_stopped_at_the_deadline_and_nothing_is_left(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, language: str, code: str, leftover: str
) -> None:
    ex = make(timeout=2)
    # The pod is Ready as soon as its main shell runs; its idle `sleep 3600` may come a moment
    # later (seen on a loaded machine): wait for it, or the snapshot misses a process of its own.
    deadline = time.monotonic() + 30
    idle = pod_cmdlines(emulator, cluster, ex.pod_name)
    while "sleep 3600" not in idle:
        assert time.monotonic() < deadline, f"the pod's idle sleep never started: {idle}"
        time.sleep(0.05)  # polling a condition, bounded by the deadline
        idle = pod_cmdlines(emulator, cluster, ex.pod_name)
    result = ex.execute_code_blocks([CodeBlock(code, language)])
    assert result.exit_code == 124
    assert result.timed_out and "Timeout" in result.output
    now = pod_cmdlines(emulator, cluster, ex.pod_name)
    assert [c for c in now if leftover in c] == []
    assert sorted(now) == sorted(idle)  # only the pod's idle main process and its sleep remain


def test_code_that_escapes_the_process_group_is_stopped_too(
    cluster: Cluster, emulator: Any, make: ExecutorFactory
) -> None:
    ex = make(timeout=2)
    result = ex.execute_code_blocks([CodeBlock("setsid sleep 304 &\nwhile :; do :; done\n", "sh")])
    assert result.exit_code == 124
    assert [c for c in pod_cmdlines(emulator, cluster, ex.pod_name) if "sleep 304" in c] == []


# -- the cluster side gives way ------------------------------------------------------------------------


def test_pod_deleted_mid_run(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    fault = emulator.faults.delete_pod_during_exec(after_bytes=5, pod=ex.pod_name)
    code = "import time\nprint('working', flush=True)\ntime.sleep(30)\n"
    with pytest.raises(OutcomeUnknownError) as info:
        ex.execute_code_blocks([CodeBlock(code, "python")])
    assert fault.fired == 1
    assert "exit code 137" in str(info.value)  # the exec was killed with its pod
    assert emulator.exec_count(ex.pod_name, cluster.namespace) - execs == 1
    assert waits == []
    # the next call names the cause
    with pytest.raises(NotFoundError, match=f'pods "{ex.pod_name}" not found'):
        ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    ex.stop()  # deleting what is gone is fine


def test_kubectl_missing(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(KubectlNotFoundError, match=r"kubernetes.io/docs/tasks/tools") as info:
        KubernetesCommandLineCodeExecutor(**{**cluster.executor_kwargs(), "kubectl": "/nonexistent/kubectl"})
    assert "/nonexistent/kubectl" in str(info.value)
    # found at construction, gone by the time it is needed
    vanishing = tmp_path / "kubectl"
    shutil.copy(cluster.kubectl, vanishing)
    ex = KubernetesCommandLineCodeExecutor(
        **{**cluster.executor_kwargs(), "kubectl": str(vanishing)}, start=False
    )
    vanishing.unlink()
    with pytest.raises(KubectlNotFoundError, match="kubectl was not found"):
        ex.start()
    ex.stop()


def _bad_kubeconfigs(
    tmp_path: Path, cluster: Cluster
) -> dict[str, tuple[dict[str, Any], str, type[Exception]]]:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("apiVersion: v1\nclusters: [unclosed\n")
    closed = tmp_path / "closed.yaml"
    closed.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    return {
        "missing": ({"kubeconfig": str(tmp_path / "absent.yaml")}, "absent.yaml", KubectlError),
        "garbage": ({"kubeconfig": str(garbage)}, "garbage.yaml", KubectlError),
        "no-such-context": ({"context": "no-such-context"}, 'context "no-such-context"', KubectlError),
        # its own context: the suite's --context names one this kubeconfig does not have
        "server-down": ({"kubeconfig": str(closed), "context": "c"}, "127.0.0.1:9", TransientError),
    }


@pytest.mark.parametrize("case", ["missing", "garbage", "no-such-context", "server-down"])
def test_bad_kubeconfig_is_a_typed_error_naming_the_cause(
    cluster: Cluster, tmp_path: Path, policy: RetryPolicy, waits: list[float], case: str
) -> None:
    override, cause, kind = _bad_kubeconfigs(tmp_path, cluster)[case]
    before = pod_names(cluster)
    with pytest.raises(kind) as info:
        KubernetesCommandLineCodeExecutor(**{**cluster.executor_kwargs(), **override, "retry": policy})
    assert cause in str(info.value)
    assert type(info.value) is kind  # not a subclass: a config error is not "transient", not retried
    # server down: the apply, then the clean-up delete, each retried within the bound
    assert len(waits) == (2 * (ATTEMPTS - 1) if kind is TransientError else 0)
    assert pod_names(cluster) == before


@pytest.mark.parametrize(
    ("method", "verb", "where"),
    [("GET", "get", "pod"), ("POST", "create", "collection")],
)
def test_rbac_forbidden_on_create_names_verb_and_resource(
    cluster: Cluster,
    emulator: Any,
    waits: list[float],
    policy: RetryPolicy,
    method: str,
    verb: str,
    where: str,
) -> None:
    name = f"kx-fault-{secrets.token_hex(4)}"
    path = pod_path(cluster, name) if where == "pod" else pod_path(cluster)
    message = RBAC_DENIAL.format(
        name=f' "{name}"' if where == "pod" else "", verb=verb, resource="pods", ns=cluster.namespace
    )
    fault = emulator.faults.fail_requests(path, 403, method=method, count=None, message=message)
    with pytest.raises(ForbiddenError) as info:
        KubernetesCommandLineCodeExecutor(**{**cluster.executor_kwargs(), "pod_name": name, "retry": policy})
    assert (info.value.verb, info.value.resource) == (verb, "pods")
    assert f"grant verb '{verb}' on 'pods'" in str(info.value)
    assert fault.fired == 1  # refused once, not retried
    assert waits == []
    assert name not in pod_names(cluster)


def test_rbac_forbidden_exec(
    cluster: Cluster, emulator: Any, make: ExecutorFactory, waits: list[float]
) -> None:
    ex = make()
    execs = emulator.exec_count(ex.pod_name, cluster.namespace)
    message = RBAC_DENIAL.format(
        name=f' "{ex.pod_name}"', verb="create", resource="pods/exec", ns=cluster.namespace
    )
    fault = emulator.faults.refuse_exec(403, message, pod=ex.pod_name, count=None)
    with pytest.raises(ForbiddenError) as info:
        ex.execute_code_blocks([CodeBlock(SIDE_EFFECT, "python")])
    assert (info.value.verb, info.value.resource) == ("create", "pods/exec")
    assert fault.fired == 1 and waits == []
    emulator.faults.clear()
    assert emulator.exec_count(ex.pod_name, cluster.namespace) == execs
    assert side_effects(cluster, ex) == 0


# -- a hostile pod answers a download -------------------------------------------------------------------

# A `tar` the model's code put first on the pod's PATH (CVE-2019-1002101 came from exactly this: a
# container's own tar binary answering `kubectl cp`). It ignores its arguments and sends a crafted
# archive; download.sh checksums whatever it sends, so only the client's member checks stand.
HOSTILE_TAR = r"""#!/usr/bin/env python3
import io, json, os, sys, tarfile
cfg = json.load(open(os.path.expanduser("~/.kx-hostile.json")))
kind, outside = cfg["kind"], cfg["outside"]
buf = io.BytesIO()
tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
def member(name, data=b"pwned\n", type_=tarfile.REGTYPE, link="", **extra):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = type_, link
    for k, v in extra.items():
        setattr(ti, k, v)
    if type_ == tarfile.REGTYPE:
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    else:
        tar.addfile(ti)
member("./ok.txt", b"fine\n")
if kind == "dotdot":
    member("../escape.txt")
elif kind == "absolute":
    member(outside + "/abs.txt")
elif kind == "symlink":
    member("./d", type_=tarfile.SYMTYPE, link=outside)
    member("./d/pwned.txt")
elif kind == "hardlink":
    member("./hl", type_=tarfile.LNKTYPE, link=outside + "/victim.txt")
elif kind == "device":
    member("./null", type_=tarfile.CHRTYPE, devmajor=1, devminor=3)
elif kind == "many":
    for i in range(50):
        member("./f%d" % i)
elif kind == "long-header":
    ti = tarfile.TarInfo("./x")
    ti.pax_headers = {"comment": "c" * (2 << 20)}
    tar.addfile(ti, io.BytesIO(b""))
if kind == "huge":  # a header that claims 3 GiB, then a trickle
    ti = tarfile.TarInfo("./huge")
    ti.size = 3 << 30
    out = buf.getvalue() + ti.tobuf(tarfile.GNU_FORMAT) + b"x" * 4096
else:
    tar.close()
    out = buf.getvalue()
sys.stdout.buffer.write(out)
"""

HOSTILE_KINDS = ["dotdot", "absolute", "symlink", "hardlink", "device", "huge", "many", "long-header"]


@pytest.fixture
def hostile(cluster: Cluster, executor_factory: ExecutorFactory) -> KubernetesCommandLineCodeExecutor:
    path = "/home/kx/.local/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
    ex = executor_factory(env_vars=[{"key": "PATH", "value": path}])
    ex.upload_file_content("hostile-tar", HOSTILE_TAR)
    setup = "mkdir -p ~/.local/bin out && cp hostile-tar ~/.local/bin/tar && chmod +x ~/.local/bin/tar && command -v tar"
    result = ex.execute_code_blocks([CodeBlock(setup, "sh")])
    assert result.stdout == "/home/kx/.local/bin/tar\n", result.output
    return ex


def local_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): ("link" if p.is_symlink() else "dir" if p.is_dir() else p.read_text())
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_download_writes_nothing_outside_the_target(
    hostile: KubernetesCommandLineCodeExecutor, tmp_path: Path, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original\n")
    landing = tmp_path / "landing"
    landing.mkdir()
    config = json.dumps({"kind": kind, "outside": str(outside)})
    write = f"import os\nopen(os.path.expanduser('~/.kx-hostile.json'), 'w').write({config!r})"
    assert hostile.execute_code_blocks([CodeBlock(write, "python")]).exit_code == 0  # (uploads use tar too)
    before = local_tree(tmp_path)
    with pytest.raises((UnsafePathError, TransferError)) as info:
        hostile.download_dir("out", landing / "dest", limits=TransferLimits(max_members=20))
    expected = {
        "dotdot": "escapes",
        "absolute": "absolute",
        "symlink": "symlink",
        "hardlink": "hardlink",
        "device": "device",
        "huge": "exceeds",
        "many": "more than 20 members",
        "long-header": "metadata header",
    }[kind]
    assert expected in str(info.value)
    assert local_tree(tmp_path) == before  # no target, no staging left, outside untouched
    assert os.stat(outside / "victim.txt").st_nlink == 1


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "device"])
def test_hostile_download_with_skip_unsafe_stays_inside(
    hostile: KubernetesCommandLineCodeExecutor, tmp_path: Path, kind: str
) -> None:
    """Links and devices left out; what follows a skipped link lands inside the target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original\n")
    config = json.dumps({"kind": kind, "outside": str(outside)})
    write = f"import os\nopen(os.path.expanduser('~/.kx-hostile.json'), 'w').write({config!r})"
    assert hostile.execute_code_blocks([CodeBlock(write, "python")]).exit_code == 0
    dest = tmp_path / "dest"
    files = hostile.download_dir("out", dest, skip_unsafe=True)
    inside = {"symlink": {"ok.txt": "fine\n", "d": "dir", "d/pwned.txt": "pwned\n"}}.get(
        kind, {"ok.txt": "fine\n"}
    )
    assert local_tree(dest) == inside
    assert sorted(str(f.relative_to(dest)) for f in files) == sorted(
        k for k, v in inside.items() if v != "dir"
    )
    assert local_tree(outside) == {"victim.txt": "original\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "outside"]
