"""kubectl-executor: run AI-agent code in a Kubernetes pod, talking to the cluster only through kubectl."""

from .dispatcher import ToolCallResult, ToolCommandLineCodeResult, ToolError
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
from .kubectl import ClusterAccess, Kubectl
from .manifest import PodOptions, Resources
from .results import CodeBlock, CodeResult, CommandLineCodeResult, MarkdownCodeExtractor
from .retry import RetryPolicy
from .transfer import TransferLimits
from .workspace import PVCValidationResult, WorkspaceVolume

__version__ = "0.1.0"

__all__ = [
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
    "PodOptions",
    "PodStartError",
    "RemoteNotFoundError",
    "Resources",
    "RetryPolicy",
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
