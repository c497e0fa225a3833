"""Kubernetes backends for agent frameworks, each a thin adapter over the public executor API.

Each module imports its framework and fails with an install hint when it is missing:
``kubectl_executor.frameworks.smolagents`` (``pip install 'kubectl-executor[smolagents]'``),
``.deepagents``, ``.adk`` and ``.openai_agents``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or fail with the pip line that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed: pip install 'kubectl-executor[{extra}]'") from exc
