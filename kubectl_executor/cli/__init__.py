"""The ``kubectl-executor`` command line (also the kubectl plugin ``kubectl executor``).

The only package that prints, configures logging, or shows progress. Every cluster operation
still goes through the library (and so through kubectl); this package only parses, picks an exit
code and formats. The cluster and pod options fall back to ``KUBECTL_EXECUTOR_*`` environment
variables through the same :class:`~kubectl_executor.settings.Settings` model the library uses
(each command's ``--help`` names the variable of every option that has one).

Laid out as click projects are: :mod:`.main` (the group and the entry point), :mod:`.base` (exit
codes, shared options, the command wrapper), one module per command family (:mod:`.run`,
:mod:`.pods`, :mod:`.workspace`, :mod:`.doctor`, :mod:`.mcp`) and :mod:`.output` (tables).
"""

from __future__ import annotations

from .base import EXIT_INTERRUPTED, EXIT_KUBECTL_NOT_FOUND, EXIT_OUTCOME_UNKNOWN, EXIT_TOOL_ERROR, EXIT_USAGE
from .doctor import role_yaml
from .main import cli, main
from .pods import parse_duration
from .run import parse_cp_path

# Kept importable for the unit tests and plugin authors.
__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_KUBECTL_NOT_FOUND",
    "EXIT_OUTCOME_UNKNOWN",
    "EXIT_TOOL_ERROR",
    "EXIT_USAGE",
    "cli",
    "main",
    "parse_cp_path",
    "parse_duration",
    "role_yaml",
]
