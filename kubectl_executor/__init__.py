"""kubectl-executor: run AI-agent code in a Kubernetes pod, talking to the cluster only through kubectl."""

from .errors import (
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

__version__ = "0.1.0"

__all__ = [
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
    "PodOptions",
    "PodStartError",
    "Resources",
    "RetryPolicy",
    "StartupTimeoutError",
    "TransferError",
    "TransientError",
    "UnsafePathError",
    "__version__",
]
