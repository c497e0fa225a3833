"""AutoGen 0.4+ adapter: an async ``CodeExecutor`` and ``Component`` running blocks in a pod.

A drop-in for autogen-ext's Docker executor (same option names where the meaning is the same)::

    from kubectl_executor.autogen import KubectlCodeExecutor

    async with KubectlCodeExecutor(image="python:3-slim", timeout=30, work_dir="coding") as executor:
        agent = CodeExecutorAgent("runner", code_executor=executor)

``work_dir`` is a directory on THIS machine, as for Docker: what is in it at start is uploaded to
the pod's workspace (``pod_work_dir``), and after each execution what changed in the pod is
downloaded into it (binary-safe, checksummed, never written outside it). ``work_dir=None`` is a
temporary directory made by :meth:`start` and removed by :meth:`stop`. ``mirror=False`` turns the
copying off (then ``work_dir`` and ``code_file`` name the pod's directory).

The blocking executor (:class:`~kubectl_executor.KubernetesCommandLineCodeExecutor`) runs in a
worker thread, one block at a time. Cancelling the ``CancellationToken`` kills the running block's
processes inside the pod and returns exit code 1 with "Code execution was cancelled." (as the
Docker executor does); cancelling the task kills it too and raises ``asyncio.CancelledError``.
Install with ``pip install 'kubectl-executor[autogen]'``.

Layout: :mod:`.executor` (:class:`KubectlCodeExecutor`), :mod:`.seed` (the seed's
:class:`PodCommandLineCodeExecutor`), :mod:`.jupyter` (the seed's :class:`PodJupyterServer` and
:class:`PodJupyterCodeExecutor`, on a stateful session: no kernel gateway, no Service),
:mod:`.specs` (the seed's pod_spec and volume forms), :mod:`.functions` (user-defined functions),
:mod:`.mirror` (the ``work_dir`` mirror), :mod:`.config` (the serialisable configurations). Import from here:
the component providers name ``kubectl_executor.autogen.<class>``.
"""

from __future__ import annotations

try:
    import autogen_core.code_executor  # noqa: F401  (AutoGen, an optional extra)
except ImportError as exc:
    raise ImportError(
        "kubectl_executor.autogen needs AutoGen 0.4 or newer: pip install 'kubectl-executor[autogen]'"
    ) from exc

from .config import (
    KubectlCodeExecutorConfig,
    PodCommandLineCodeExecutorConfig,
    PodJupyterCodeExecutorConfig,
    PodJupyterConnectionInfo,
    PodJupyterServerConfig,
)
from .executor import CANCEL_GRACE_SECONDS as CANCEL_GRACE_SECONDS
from .executor import CANCELLED as CANCELLED
from .executor import NOT_IN_WORKSPACE as NOT_IN_WORKSPACE
from .executor import PIP_TIMEOUT_SECONDS as PIP_TIMEOUT_SECONDS
from .executor import KubectlCodeExecutor, KubectlCodeResult
from .executor import normalise_language as normalise_language
from .functions import FUNCTION_PROMPT_TEMPLATE as FUNCTION_PROMPT_TEMPLATE
from .functions import AnyFunction as AnyFunction
from .functions import build_python_functions_file, to_stub
from .jupyter import PodJupyterCodeExecutor, PodJupyterCodeResult, PodJupyterServer
from .mirror import LIST_SCRIPT as LIST_SCRIPT
from .mirror import LIST_SHELL as LIST_SHELL
from .seed import PodCommandLineCodeExecutor
from .specs import SEED_CONTAINER as SEED_CONTAINER

__all__ = [
    "KubectlCodeExecutor",
    "KubectlCodeExecutorConfig",
    "KubectlCodeResult",
    "PodCommandLineCodeExecutor",
    "PodCommandLineCodeExecutorConfig",
    "PodJupyterCodeExecutor",
    "PodJupyterCodeExecutorConfig",
    "PodJupyterCodeResult",
    "PodJupyterConnectionInfo",
    "PodJupyterServer",
    "PodJupyterServerConfig",
    "build_python_functions_file",
    "to_stub",
]
