"""The per-block cost of listing changed files (rich results): one run against an emulator this
script starts (or --kubeconfig PATH: a real cluster), medians and the ratio to no scan.

    .venv/bin/python benchmarks/scan_cost.py            # --rounds N, --files N, --kubectl PATH

For each mode (stateless, session, stateful) and work_dir size (empty, and ``--files`` small files
made first), ``print(1)`` runs with the scan (``list_files=True``, the default) and without it
(``list_files=False``), round-robin so that load from elsewhere hits both alike. Then one block that
writes 100 files of 10 KiB each, with and without the scan (the scan hashes them).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import IMAGE, NAMESPACE, Bench, emulator, pick_kubectl  # noqa: E402

from kubectl_executor import KubernetesCommandLineCodeExecutor  # noqa: E402

MODES = {"stateless": {}, "session": {"session": True}, "stateful": {"stateful": True}}
WRITER = "import os\nfor i in range(100):\n    open('w/%d.txt' % i, 'w').write('x' * 10240)\n"


def measure(
    pair: dict[str, KubernetesCommandLineCodeExecutor], code: str, language: str, rounds: int
) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(rounds):
        for name, ex in pair.items():
            start = time.perf_counter()
            done = ex.run(code, language)
            times[name].append((time.perf_counter() - start) * 1000)
            assert done.exit_code == 0, done.stderr
            assert bool(done.files) == (name == "scan" and code.startswith("import os")), done.files
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--files", type=int, default=1000, help="files in the larger work_dir")
    ap.add_argument("--kubectl", default=None)
    ap.add_argument("--kubeconfig", default=None, help="a real cluster's kubeconfig instead of an emulator")
    args = ap.parse_args()
    kubectl = pick_kubectl(args.kubectl)
    with tempfile.TemporaryDirectory(prefix="kx-scan-") as tmp, ExitStack() as stack:
        os.environ["KUBECACHEDIR"] = str(Path(tmp) / "cache")
        kubeconfig = args.kubeconfig or stack.enter_context(emulator(Path(tmp)))
        bench = Bench(kubectl, kubeconfig, args.rounds)
        bench.kubectl_run("create", "namespace", NAMESPACE, check=False)
        print(
            f"changed-files scan cost, {'real cluster' if args.kubeconfig else 'the kube emulator'}, image "
            f"{IMAGE}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}, medians of {args.rounds} round-robin rounds (ms)"
        )
        print("| mode | work_dir | no scan | scan | ratio |")
        print("|---|---|---|---|---|")
        for mode, extra in MODES.items():
            kw: dict[str, Any] = bench.kw(**extra)
            scan = stack.enter_context(KubernetesCommandLineCodeExecutor(**kw))
            # The same pod for both: only the scan differs.
            plain = stack.enter_context(
                KubernetesCommandLineCodeExecutor(
                    **{**kw, "pod_name": scan.pod_name, "attach": True, "list_files": False}
                )
            )
            pair = {"none": plain, "scan": scan}
            for label, files in (("empty", 0), (f"{args.files} files", args.files)):
                if files:
                    plain.run(f"mkdir -p d && cd d && seq 1 {files} | xargs touch", "sh")
                got = measure(pair, "print(1)", "python", args.rounds)
                print(
                    f"| {mode} | {label} | {got['none']:.1f} | {got['scan']:.1f} | {got['scan'] / got['none']:.2f}x |"
                )
            plain.run("mkdir -p w", "sh")
            got = measure(pair, WRITER, "python", max(args.rounds // 3, 5))
            print(
                f"| {mode} | + block writes 100 x 10 KiB | {got['none']:.1f} | {got['scan']:.1f} | "
                f"{got['scan'] / got['none']:.2f}x |"
            )
            plain.run("rm -rf d w", "sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
