"""Where the examples run: kubectl's current context, or the bundled local emulator.

Set ``KX_USE_EMULATOR=1`` to force the emulator (fixtures/kube_emulator: test infrastructure, not a
real cluster; every call still goes through the real kubectl). ``KUBECTL_EXECUTOR_*`` variables
(namespace, image, timeout...) apply as they do for the library and the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from kubectl_executor.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _cluster_configured() -> bool:
    kubectl = shutil.which("kubectl")
    if os.environ.get("KX_USE_EMULATOR") == "1" or kubectl is None:
        return False
    done = subprocess.run([kubectl, "config", "current-context"], capture_output=True, check=False)
    return done.returncode == 0


@contextmanager
def cluster() -> Iterator[dict[str, Any]]:
    """Executor keyword arguments for the cluster to use (the emulator is stopped on exit)."""
    kwargs = Settings().executor_kwargs()
    with ExitStack() as stack:
        if _cluster_configured():
            print("Using kubectl's current context.")
        else:
            sys.path.insert(0, str(ROOT / "fixtures"))
            from kube_emulator import Emulator

            emulator = stack.enter_context(Emulator())
            state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            kwargs["kubeconfig"] = str(emulator.write_kubeconfig(state / "kubeconfig"))
            os.environ["KUBECACHEDIR"] = str(state / "cache")
            if not shutil.which("kubectl") and "kubectl" not in kwargs:
                kwargs["kubectl"] = str(ROOT / ".ci/kubectl-1.37/bin/kubectl")
            print(f"No cluster configured: using the LOCAL KUBERNETES API EMULATOR at {emulator.url}")
        yield kwargs
