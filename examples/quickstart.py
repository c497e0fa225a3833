"""The main job: run code blocks in a pod through kubectl.

Uses the cluster of kubectl's current context when one is configured; otherwise (or with
``KX_USE_EMULATOR=1``) starts the bundled local Kubernetes API emulator (fixtures/kube_emulator,
test infrastructure, not a real cluster) and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor

ROOT = Path(__file__).resolve().parent.parent


def cluster_configured() -> bool:
    kubectl = shutil.which("kubectl")
    if os.environ.get("KX_USE_EMULATOR") == "1" or kubectl is None:
        return False
    done = subprocess.run([kubectl, "config", "current-context"], capture_output=True, check=False)
    return done.returncode == 0


def main() -> int:
    with ExitStack() as stack:
        kwargs: dict[str, str] = {}
        if cluster_configured():
            print("Using kubectl's current context.")
        else:
            sys.path.insert(0, str(ROOT / "fixtures"))
            from kube_emulator import Emulator

            emulator = stack.enter_context(Emulator())
            state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            kubeconfig = emulator.write_kubeconfig(state / "kubeconfig")
            os.environ["KUBECACHEDIR"] = str(state / "cache")
            kwargs["kubeconfig"] = str(kubeconfig)
            if not shutil.which("kubectl"):
                kwargs["kubectl"] = str(ROOT / ".ci/kubectl-1.37/bin/kubectl")
            print(f"No cluster configured: using the LOCAL KUBERNETES API EMULATOR at {emulator.url}")
            print("(test infrastructure; every call below still goes through the real kubectl)")

        executor = stack.enter_context(KubernetesCommandLineCodeExecutor(timeout=5, **kwargs))
        print(f"pod {executor.pod_name} is ready in namespace {executor.namespace}")
        blocks = [
            CodeBlock(
                "import platform, sys\nprint('hello from', platform.node(), sys.version.split()[0])", "python"
            ),
            CodeBlock('echo "shell: $(id -u) in $(pwd)"; exit 3', "sh"),
        ]
        result = executor.execute_code_blocks(blocks)
        print(f"exit code: {result.exit_code} (the shell block's own `exit 3`)")
        print("output:")
        print(result.output, end="")
        slow = executor.execute_code_blocks([CodeBlock("import time\nwhile True: time.sleep(1)", "python")])
        print(f"an endless loop with timeout=5: exit code {slow.exit_code}, timed_out={slow.timed_out}")
        ok = result.exit_code == 3 and slow.exit_code == 124
    print("pod deleted." if ok else "unexpected results!")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
