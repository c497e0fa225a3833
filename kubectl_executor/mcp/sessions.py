"""Deprecated: this module is :mod:`kubectl_executor.mcp.clients` under its former name (the
server keeps a pod per MCP *client*; "session" now means the executor's persistent exec channel).
:class:`SessionRegistry` is :class:`~kubectl_executor.mcp.clients.ClientRegistry` with its former
keyword ``max_sessions``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

from .clients import ClientRegistry, SandboxFactory, Workspace

__all__ = ["SandboxFactory", "SessionRegistry", "Workspace"]


class SessionRegistry(ClientRegistry):
    """Deprecated alias of :class:`ClientRegistry` (``max_sessions`` is its ``max_clients``)."""

    def __init__(
        self,
        factory: SandboxFactory,
        *,
        idle_timeout: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        warnings.warn("SessionRegistry is deprecated: use ClientRegistry", DeprecationWarning, stacklevel=2)
        super().__init__(factory, idle_timeout=idle_timeout, max_clients=max_sessions, clock=clock, wait=wait)

    @property
    def max_sessions(self) -> int:
        return self.max_clients
