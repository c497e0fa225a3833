"""Defaults that more than one layer shows or applies, each defined once (stdlib only: light to import)."""

from __future__ import annotations

RUN_TIMEOUT = 60
"""Seconds a code block may run unless configured (the seed's default)."""

MCP_RUN_TIMEOUT = 45
"""Seconds an MCP run may take unless the call says otherwise: below the TypeScript SDK's 60 s default
request timeout, so that the client gets exit code 124 rather than timing out itself."""

IMAGE = "python:3-slim"
"""The container image unless configured (the seed's default)."""

WORK_DIR = "/workspace"
"""The work directory in the pod (an emptyDir, or the shared claim's mount)."""

STARTUP_TIMEOUT = 300.0
"""Seconds to wait for a pod to become ready."""

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
"""Bytes of each stream kept in a result (the full log stays in the pod)."""

ACTIVE_DEADLINE_SECONDS = 6 * 3600
"""The pod's activeDeadlineSeconds: a pod whose client vanished ends by itself."""

MAX_RICH_OUTPUT_BYTES = 8 * 1024 * 1024
"""Bytes of one rich output (a chart, a table's HTML) sent back; a larger one stays in the pod."""

MAX_RICH_BYTES = 32 * 1024 * 1024
"""Bytes of all the rich outputs of one result sent back; the rest stays in the pod."""

RUN_AS_USER = 1000
"""The uid (and, unless set apart, gid) the code runs as in a hardened pod."""

WORKSPACE_SIZE_LIMIT = "2Gi"
"""The sizeLimit of the work directory's emptyDir (none with a shared claim)."""
