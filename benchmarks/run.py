"""kubectl-executor benchmarks: one run against an emulator this script starts, medians and ratios.

    .venv/bin/pip install -r benchmarks/requirements.txt   # the client library, a baseline only
    .venv/bin/python benchmarks/run.py                      # --rounds N, --kubectl PATH
    .venv/bin/python benchmarks/run.py --kubeconfig PATH    # a real cluster instead (its current
                                                            # context), e.g. fixtures/cluster/up's

1. Per-block time of ``print(1)`` and of a block printing 1 MiB: a bare ``kubectl exec`` of the same
   command (the floor of any stateless kubectl design), our stateless path, our session, a stateful
   session, and an exec through the Kubernetes client library. "overhead" is the median minus the
   program's own run time, measured inside the pod.
2. "I need a pod" to the first result: cold create + wait + run, against a warm-pool claim + run.
3. 20 executors running blocks at once (stateless and session): throughput and errors.
4. Import time of ``kubectl_executor`` (``python -X importtime``, fresh processes) and client RSS.

Methods are measured round-robin, so that load from elsewhere on the machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor  # noqa: E402
from kubectl_executor._exec.protocol import RUN_SCRIPT, RUNNER_PREFIX, RunRequest, exec_args  # noqa: E402
from kubectl_executor.pool import WarmPool  # noqa: E402

NAMESPACE = "kx-bench"
IMAGE = "python:3-slim"
MIB = 1 << 20
REAL_START = 2.0  # seconds from create to running for a cached image on a real node: a low estimate
BLOCKS = {
    "print(1)": ("print(1)", b"1\n"),
    "1 MiB output": ("import sys; sys.stdout.write('x' * 1048576)", b"x" * MIB),
}

FLOOR = """
import statistics, subprocess, sys, time
program, rounds = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(rounds):
    start = time.perf_counter()
    subprocess.run(["python3", "-c", program], stdout=subprocess.PIPE, check=True)
    times.append(time.perf_counter() - start)
print(statistics.median(times) * 1000)
"""

IMPORT_TREE = "from kubectl_executor import KubernetesCommandLineCodeExecutor, CodeBlock"  # what users write
RSS_CHILD = """
import json, sys, time
def rss(pid="self"):
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
before = rss()
import kubectl_executor
from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor
imported = rss()
kwargs = json.loads(sys.argv[1])
ex = KubernetesCommandLineCodeExecutor(**kwargs)
for _ in range(50):
    assert ex.execute_code_blocks([CodeBlock("print(1)", "python")]).output == "1\\n"
after = rss()
kubectl = rss(ex._session._conn.proc.pid)[0] if ex._session and ex._session._conn else 0.0
ex.stop()
print(json.dumps({"start": before[0], "imported": imported[0], "after": after[0], "peak": after[1],
                  "kubectl": kubectl}))
"""


# -- plumbing ------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def pick_kubectl(explicit: str | None) -> str:
    """kubectl on PATH, but not the gcloud dispatcher (it starts a second kubectl every call)."""
    chosen = explicit or os.environ.get("KX_BENCH_KUBECTL") or shutil.which("kubectl")
    if not chosen:
        sys.exit("no kubectl: install it or pass --kubectl")
    version = subprocess.run([chosen, "version", "--client"], capture_output=True, text=True).stdout
    if "dispatcher" in version and explicit is None:
        direct = Path(os.path.realpath(chosen)).parent / "kubectl.1.32"
        if direct.exists():
            return str(direct)
    return chosen


@contextmanager
def emulator(tmp: Path, start_delay: float = 0.05) -> Iterator[str]:
    """The kube emulator as a separate process (its event loop must not share our GIL).
    ``start_delay``: seconds a new pod stays ContainerCreating."""
    kubeconfig = tmp / f"kubeconfig-{start_delay:g}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "fixtures")}
    argv = [sys.executable, "-m", "kube_emulator", "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE]
    proc = subprocess.Popen(
        [*argv, "--start-delay", str(start_delay)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                break
        else:
            sys.exit("the emulator did not start")
        yield str(kubeconfig)
    finally:
        proc.terminate()
        proc.wait(60)


class Bench:
    def __init__(self, kubectl: str, kubeconfig: str, rounds: int) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.rounds = rounds
        self.lines: list[str] = []
        self.targets: list[tuple[str, str, bool]] = []

    def kw(self, **more: Any) -> dict[str, Any]:
        return {
            "kubectl": self.kubectl,
            "kubeconfig": self.kubeconfig,
            "namespace": NAMESPACE,
            "image": IMAGE,
            **more,
        }

    def kubectl_run(
        self, *args: str, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [self.kubectl, f"--kubeconfig={self.kubeconfig}", f"--namespace={NAMESPACE}", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, check=check, timeout=300)

    def out(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def target(self, what: str, figure: str, ok: bool) -> None:
        self.targets.append((what, figure, ok))

    # -- 1. per-block overhead ---------------------------------------------------------------

    def per_block(self) -> None:
        from kubernetes import client, config
        from kubernetes.stream import stream

        stateless = KubernetesCommandLineCodeExecutor(**self.kw())
        pod = stateless.pod_name
        session = KubernetesCommandLineCodeExecutor(**self.kw(pod_name=pod, attach=True, session=True))
        stateful = KubernetesCommandLineCodeExecutor(**self.kw(pod_name=pod, attach=True, stateful=True))
        api = client.CoreV1Api(config.new_client_from_config(self.kubeconfig))
        try:
            self.out(
                f"1. Per-block time (median ms over {self.rounds} rounds; overhead = median - the "
                "program's own"
            )
            self.out("   run time inside the pod; ratio = median / bare kubectl exec)")
            self.out(f"   {'block':<14}{'method':<30}{'median':>9}{'overhead':>10}{'ratio':>8}")
            for label, (program, expected) in BLOCKS.items():
                floor = float(
                    self.kubectl_run(
                        "exec", pod, "-c", "executor", "--", "python3", "-c", FLOOR, program, "30"
                    ).stdout
                )

                def bare(program: str = program, expected: bytes = expected) -> None:
                    done = self.kubectl_run("exec", pod, "-c", "executor", "--", "python3", "-c", program)
                    assert done.stdout == expected

                def run_with(
                    ex: KubernetesCommandLineCodeExecutor, program: str = program, expected: bytes = expected
                ) -> Callable[[], None]:
                    def run() -> None:
                        result = ex.execute_code_blocks([CodeBlock(program, "python")])
                        assert result.exit_code == 0 and result.output.encode() == expected, result.output[
                            :200
                        ]

                    return run

                def library(program: str = program, expected: bytes = expected) -> None:
                    resp = stream(
                        api.connect_get_namespaced_pod_exec,
                        pod,
                        NAMESPACE,
                        command=["python3", "-c", program],
                        container="executor",
                        stdout=True,
                        stderr=True,
                        stdin=False,
                        tty=False,
                        _preload_content=False,
                    )
                    try:
                        resp.run_forever(timeout=60)
                        assert resp.read_stdout().encode() == expected and resp.returncode == 0
                    finally:
                        resp.close()

                request = RunRequest(program.encode(), "/workspace", "bench.py", "python", 60).encode()

                def bare_stdin(program: str = program, expected: bytes = expected) -> None:
                    done = self.kubectl_run(
                        "exec", "-i", pod, "-c", "executor", "--", "python3", "-c", program, stdin=b""
                    )
                    assert done.stdout == expected

                def bare_runner(
                    request: bytes = request, expected: bytes = expected, python: bool = True
                ) -> None:
                    nonce = request.split(b" ", 2)[1].decode()
                    if python:  # what the executor runs: the launcher, run.py on stdin
                        args, stdin = exec_args(pod, "executor", nonce), RUNNER_PREFIX + request
                    else:
                        args, stdin = (
                            ["exec", "-i", pod, "-c", "executor", "--", "sh", "-c", RUN_SCRIPT],
                            request,
                        )
                    done = self.kubectl_run(*args, stdin=stdin)
                    assert expected in done.stdout and b"__KX_EXIT_" in done.stdout

                methods: dict[str, Callable[[], None]] = {
                    "bare kubectl exec": bare,
                    "  bare, with -i and empty stdin+": bare_stdin,
                    "  bare -i, via run.py+": bare_runner,
                    "  bare -i, via run.sh+": lambda: bare_runner(python=False),
                    "stateless (ours)": run_with(stateless),
                    "session (ours)": run_with(session),
                    "kubernetes client library": library,
                    "stateful session (ours)*": run_with(stateful),
                }
                times: dict[str, list[float]] = {name: [] for name in methods}
                for i in range(self.rounds + 2):
                    for name, fn in methods.items():
                        took = timed_ms(fn)
                        if i >= 2:  # two warm-up rounds: discovery caches, connections, page cache
                            times[name].append(took)
                med = {name: median(values) for name, values in times.items()}
                base = med["bare kubectl exec"]
                self.out(f"   {label:<14}{'program alone, in the pod':<30}{floor:>9.1f}{'':>10}{'':>8}")
                for name in methods:
                    over = "" if name.endswith(("*", "+")) else f"{med[name] - floor:>10.1f}"
                    self.out(f"   {'':<14}{name:<30}{med[name]:>9.1f}{over:>10}{med[name] / base:>7.2f}x")
                stateless_ratio = med["stateless (ours)"] / base
                session_over = med["session (ours)"] - floor
                library_over = med["kubernetes client library"] - floor
                self.target(
                    f"{label}: stateless <= 1.15x bare kubectl exec",
                    f"{stateless_ratio:.2f}x",
                    stateless_ratio <= 1.15,
                )
                self.target(
                    f"{label}: session overhead < client-library overhead",
                    f"{session_over:.1f} ms vs {library_over:.1f} ms",
                    session_over < library_over,
                )
                self.target(f"{label}: session overhead < 5 ms", f"{session_over:.1f} ms", session_over < 5.0)
            self.out("   + diagnostic rows: what the stateless path is made of (kubectl with stdin, then the")
            self.out("     in-pod runner: run.py, or run.sh for images without python3), each a bare kubectl")
            self.out("     exec with no Python client around it.")
            self.out(
                "   * the stateful session runs Python in a persistent interpreter: no interpreter start,"
            )
            self.out("     so it is not comparable with the program's own run time (no overhead column).")
        finally:
            api.api_client.close()
            for ex in (stateful, session, stateless):
                ex.stop()

    # -- 2. pod to first result ---------------------------------------------------------------

    def pod_to_result(self, label: str, count: int = 5, *, target: bool = True) -> None:
        def first_result(**kwargs: Any) -> float:
            start = time.perf_counter()
            ex = KubernetesCommandLineCodeExecutor(**self.kw(**kwargs))
            try:
                assert ex.execute_code_blocks([CodeBlock("print(1)", "python")]).output == "1\n"
                return (time.perf_counter() - start) * 1000
            finally:
                ex.stop()

        cold = [first_result() for _ in range(count)]
        pool = WarmPool(size=2, **self.kw())
        warm: list[float] = []
        try:
            for _ in range(count):
                assert pool.wait_warm(timeout=300)
                warm.append(first_result(pool=pool))
        finally:
            pool.close()
        ratio = median(warm) / median(cold)
        self.out(f"   {label}")
        self.out(f"     {'cold: create + wait Ready + run':<42}{median(cold):>9.1f}")
        self.out(f"     {'warm pool: claim + run':<42}{median(warm):>9.1f}{ratio:>10.2f}x of cold")
        if target:
            self.target(
                f"pool to first result < 1/3 of cold ({label.split(':')[0]})", f"{ratio:.2f}x", ratio < 1 / 3
            )
        else:
            self.out(
                "     (not a target: these pods start in 0.1 s, so there is no start-up for a pool to save;"
            )
            self.out("      a claim is itself a kubectl call, as long as a third of this cold start)")

    # -- 3. concurrency -------------------------------------------------------------------------

    def concurrency(self, executors: int = 20, blocks: int = 10) -> None:
        made: list[KubernetesCommandLineCodeExecutor] = []
        lock = threading.Lock()

        failed: list[str] = []

        def make(i: int) -> None:
            try:
                ex = KubernetesCommandLineCodeExecutor(**self.kw())
            except Exception as exc:
                with lock:
                    failed.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                made.append(ex)

        threads = [threading.Thread(target=make, args=(i,)) for i in range(executors)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sessions = [
            KubernetesCommandLineCodeExecutor(**self.kw(pod_name=ex.pod_name, attach=True, session=True))
            for ex in made
        ]
        self.out()
        self.out(f"3. {len(made)} executors at once (of {executors} asked for), {blocks} print() blocks each")
        for error in failed[:3]:
            self.out(f"   could not start: {error.splitlines()[0][:150]}")
        self.target("20 concurrent executors: all pods started", f"{len(failed)} failed", not failed)
        try:
            for label, group in (("stateless", made), ("session", sessions)):
                errors: list[str] = []

                def work(ex: KubernetesCommandLineCodeExecutor, n: int, errors: list[str] = errors) -> None:
                    for j in range(blocks):
                        try:
                            result = ex.execute_code_blocks([CodeBlock(f"print({n} * {j})", "python")])
                            if result.exit_code != 0 or result.output != f"{n * j}\n":
                                raise AssertionError(f"exit {result.exit_code}: {result.output[:100]!r}")
                        except Exception as exc:
                            with lock:
                                errors.append(f"{type(exc).__name__}: {exc}")

                workers = [threading.Thread(target=work, args=(ex, n)) for n, ex in enumerate(group)]
                start = time.perf_counter()
                for t in workers:
                    t.start()
                for t in workers:
                    t.join()
                wall = time.perf_counter() - start
                total = len(group) * blocks
                self.out(
                    f"   {label:<12}{total} blocks in {wall:6.2f} s = {total / wall:7.1f} blocks/s, "
                    f"errors: {len(errors)}"
                )
                for error in errors[:3]:
                    self.out(f"      {error.splitlines()[0][:150]}")
                self.target(f"20 concurrent executors ({label}): no errors", str(len(errors)), not errors)
        finally:
            for ex in sessions + made:
                ex.stop()

    # -- 4. import time and RSS ---------------------------------------------------------------

    def footprint(self, runs: int = 15) -> None:
        python = sys.executable
        totals: list[float] = []
        groups: dict[str, list[float]] = {
            "pydantic and its deps": [],
            "kubectl_executor modules": [],
            "stdlib, other": [],
        }
        pydantic_like = (
            "pydantic",
            "pydantic_core",
            "annotated_types",
            "typing_extensions",
            "typing_inspection",
        )
        for _ in range(runs):
            err = subprocess.run(
                [python, "-X", "importtime", "-c", IMPORT_TREE], capture_output=True, text=True, cwd=ROOT
            ).stderr
            sums = dict.fromkeys(groups, 0.0)
            lines = [
                line
                for line in err.splitlines()
                if line.startswith("import time:") and "self [us]" not in line
            ]
            parsed = [line.split(":", 1)[1].split("|") for line in lines]
            # -X importtime prints children before their parent, indented: the subtree of
            # kubectl_executor is the indented run of lines just before its own (top-level) line.
            top = max(i for i, (_, _, name) in enumerate(parsed) if name.strip() == "kubectl_executor")
            first = top
            while first > 0 and parsed[first - 1][2].startswith("   "):
                first -= 1
            totals.append(int(parsed[top][1]) / 1000)
            for self_us, _, name in parsed[first : top + 1]:
                name = name.strip()
                key = (
                    "pydantic and its deps"
                    if name.split(".")[0] in pydantic_like
                    else "kubectl_executor modules"
                    if name.startswith("kubectl_executor")
                    else "stdlib, other"
                )
                sums[key] += int(self_us) / 1000
            for key, value in sums.items():
                groups[key].append(value)
        startup = [timed_ms(lambda: subprocess.run([python, "-c", "pass"], check=True)) for _ in range(runs)]
        with_import = [
            timed_ms(lambda: subprocess.run([python, "-c", IMPORT_TREE], check=True, cwd=ROOT))
            for _ in range(runs)
        ]
        self.out()
        self.out(f"4. Import time of `{IMPORT_TREE}` (fresh processes, median of {runs})")
        self.out(f"   {'python -X importtime: kubectl_executor (cumulative)':<56}{median(totals):>8.1f} ms")
        for key, values in groups.items():
            self.out(f"     {'of which ' + key + ' (self times)':<54}{median(values):>8.1f} ms")
        wall = "wall: python -c '<that import>' minus python -c pass"
        self.out(f"   {wall:<56}{median(with_import) - median(startup):>8.1f} ms")
        self.target("import time < 100 ms", f"{median(totals):.1f} ms", median(totals) < 100)

    def rss(self) -> None:
        ex = KubernetesCommandLineCodeExecutor(**self.kw())
        try:
            kwargs = {**self.kw(pod_name=ex.pod_name, attach=True, session=True)}
            done = subprocess.run(
                [sys.executable, "-c", RSS_CHILD, json.dumps(kwargs)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            rss = json.loads(done.stdout)
        finally:
            ex.stop()
        self.out(
            f"   Client RSS (fresh process, MiB): interpreter {rss['start']:.1f}, after import "
            f"{rss['imported']:.1f}, after 50 session blocks {rss['after']:.1f} (peak {rss['peak']:.1f}); "
            f"the session's kubectl process {rss['kubectl']:.1f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="rounds of the per-block benchmark")
    ap.add_argument("--kubectl", default=None, help="kubectl binary (default: the one on PATH)")
    ap.add_argument(
        "--kubeconfig",
        default=None,
        help="run against this kubeconfig's current context (a real cluster) instead of an emulator",
    )
    ap.add_argument(
        "--only", default="1234", help="which benchmarks to run, e.g. --only 13 (default: all four)"
    )
    args = ap.parse_args()
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        sys.exit("install the baseline first: .venv/bin/pip install -r benchmarks/requirements.txt")
    kubectl = pick_kubectl(args.kubectl)
    with tempfile.TemporaryDirectory(prefix="kx-bench-") as tmp, ExitStack() as stack:
        os.environ["KUBECACHEDIR"] = str(Path(tmp) / "cache")  # a fresh discovery cache for this run
        real = args.kubeconfig is not None
        kubeconfig = args.kubeconfig if real else stack.enter_context(emulator(Path(tmp)))
        bench = Bench(kubectl, kubeconfig, args.rounds)
        bench.kubectl_run("create", "namespace", NAMESPACE, check=False)
        version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
        where = f"the real cluster of {kubeconfig}" if real else "the kube emulator (started by this script)"
        bench.out(f"kubectl-executor benchmarks against {where}")
        bench.out(
            f"kubectl {version.splitlines()[0].split(':')[-1].strip()} ({kubectl}), Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, load average at start "
            f"{os.getloadavg()[0]:.2f}"
        )
        bench.out()
        if "1" in args.only:
            bench.per_block()
        if "2" in args.only:
            bench.out()
            bench.out("2. 'I need a pod' to the first result of print(1) (median ms of 5)")
            if real:
                bench.pod_to_result("real cluster: the kubelet and containerd start each pod")
            else:
                bench.pod_to_result(
                    "emulator as is: a new pod is Ready ~0.1 s after its create", target=False
                )
                # The same on a second emulator whose pods start as they do on a real node.
                with emulator(Path(tmp), start_delay=REAL_START) as slow_kubeconfig:
                    slow = Bench(kubectl, slow_kubeconfig, args.rounds)
                    slow.kubectl_run("create", "namespace", NAMESPACE, check=False)
                    slow.pod_to_result(
                        f"realistic: pods stay ContainerCreating {REAL_START:g} s (--start-delay), as "
                        "with a cached image on a real node"
                    )
                    bench.lines += slow.lines
                    bench.targets += slow.targets
        if "3" in args.only:
            bench.concurrency()
        if "4" in args.only:
            bench.footprint()
            bench.rss()
        bench.out()
        bench.out("Targets")
        for what, figure, ok in bench.targets:
            bench.out(f"   {'meets ' if ok else 'MISSES'} {what:<62}{figure}")
        if real:  # an emulator goes with its namespace; a real cluster keeps it unless deleted
            bench.kubectl_run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    return 0 if all(ok for _, _, ok in bench.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
