"""The ``kubectl-executor`` group: every command added to it, and the console-script entry point."""

from __future__ import annotations

from collections.abc import Sequence

import click  # a core dependency: the command works on the base install

from .._version import __version__
from .base import ExitCodesGroup
from .doctor import doctor
from .mcp import mcp
from .pods import down, gc, ls, up
from .run import call, cp, exec_, run
from .workspace import workspace_group


@click.group(
    cls=ExitCodesGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, prog_name="kubectl-executor")
def cli() -> None:
    """Run code in a Kubernetes pod, talking to the cluster only through kubectl.

    The cluster and pod options (--kubectl, --kubeconfig, --context, --namespace, --image,
    --timeout) also read KUBECTL_EXECUTOR_<OPTION> from the environment (e.g.
    KUBECTL_EXECUTOR_NAMESPACE), and some options of `mcp`, `doctor` and `workspace create` too; each
    command's --help names the variable of every option that has one ([env var: ...]); flags win.
    Bearer-token mode: KUBECTL_EXECUTOR_REMOTE_CONTROL_PLANE with the token in KUBE_TOKEN (never
    a flag: argv is readable by every local user).
    """


for _command in (run, exec_, call, cp, up, down, ls, gc, doctor, mcp, workspace_group):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``kubectl-executor`` and ``kubectl executor``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="kubectl-executor")
