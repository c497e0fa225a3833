"""kubectl-executor: run AI-agent code in a Kubernetes pod, talking to the cluster only through kubectl."""

from typing import TYPE_CHECKING, Any

from ._cluster.kubectl import Kubectl
from ._cluster.retry import RetryPolicy
from ._exec.results import CodeBlock, MarkdownCodeExtractor
from ._exec.tar import TransferLimits
from ._version import __version__
from .errors import (
    ClaimNotBoundError,
    ConflictError,
    ExecNotStartedError,
    ForbiddenError,
    InvalidInputError,
    KubectlError,
    KubectlExecutorError,
    KubectlNotFoundError,
    NotFoundError,
    OutcomeUnknownError,
    PodStartError,
    RemoteNotFoundError,
    StartupTimeoutError,
    TransferError,
    TransientError,
    UnsafePathError,
)
from .executor import KubernetesCommandLineCodeExecutor

if TYPE_CHECKING:
    from ._cluster.claim_models import PVCValidationResult
    from .boundary import (
        ChangedFile,
        ClusterAccess,
        CodeResult,
        CommandLineCodeResult,
        PodShape,
        Resources,
        RichOutput,
        RunOptions,
        ToolCallResult,
        ToolCommandLineCodeResult,
        ToolError,
    )
    from .workspace import WorkspaceVolume

# Imported when first used: the pydantic types (importing pydantic costs as much as all the rest)
# and the workspace module (most programs never touch volumes).
_LAZY = {
    **dict.fromkeys(
        [
            "ChangedFile",
            "ClusterAccess",
            "CodeResult",
            "CommandLineCodeResult",
            "PodShape",
            "Resources",
            "RichOutput",
            "RunOptions",
            "ToolCallResult",
            "ToolCommandLineCodeResult",
            "ToolError",
        ],
        ".boundary",
    ),
    "PVCValidationResult": "._cluster.claim_models",
    "WorkspaceVolume": ".workspace",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChangedFile",
    "ClaimNotBoundError",
    "ClusterAccess",
    "CodeBlock",
    "CodeResult",
    "CommandLineCodeResult",
    "ConflictError",
    "ExecNotStartedError",
    "ForbiddenError",
    "InvalidInputError",
    "Kubectl",
    "KubectlError",
    "KubectlExecutorError",
    "KubectlNotFoundError",
    "KubernetesCommandLineCodeExecutor",
    "MarkdownCodeExtractor",
    "NotFoundError",
    "OutcomeUnknownError",
    "PVCValidationResult",
    "PodShape",
    "PodStartError",
    "RemoteNotFoundError",
    "Resources",
    "RetryPolicy",
    "RichOutput",
    "RunOptions",
    "StartupTimeoutError",
    "ToolCallResult",
    "ToolCommandLineCodeResult",
    "ToolError",
    "TransferError",
    "TransferLimits",
    "TransientError",
    "UnsafePathError",
    "WorkspaceVolume",
    "__version__",
]
