"""Defaults that more than one layer shows or applies, each defined once (stdlib only: light to import)."""

from __future__ import annotations

RUN_TIMEOUT = 60
"""Seconds a code block may run unless configured (the seed's default)."""

MCP_RUN_TIMEOUT = 45
"""Seconds an MCP run may take unless the call says otherwise: below the TypeScript SDK's 60 s default
request timeout, so that the client gets exit code 124 rather than timing out itself."""
