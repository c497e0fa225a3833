"""``workspace create | list | delete``: shared volumes (PersistentVolumeClaims)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click  # a core dependency: the command works on the base install

from .._cluster.claim import delete_claims, get_claim, list_claims, list_workspaces
from .._cluster.claim_models import PersistentVolumeClaim, workspace_selector
from .._cluster.labels import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
)
from .._cluster.manifest import validate_dns_label
from ..settings import ENV_PREFIX
from ..workspace import WorkspaceVolume
from . import base
from .base import (
    EXIT_OK,
    EXIT_TOOL_ERROR,
    Common,
    ExitCodesGroup,
    Failure,
    access_options,
    command,
    echo_json,
    make_kubectl,
    output_options,
    progress,
    with_exit_codes,
)
from .output import EPHEMERAL, format_age, print_table

ACCESS_MODES = click.Choice(["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany", "ReadWriteOncePod"])


def _workspace_env(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


@click.group(
    "workspace",
    cls=ExitCodesGroup,
    epilog="Executors mount a workspace with the library's shared_pvc_name=NAME (or WorkspaceVolume).",
)
def workspace_group() -> None:
    """Shared workspaces: PersistentVolumeClaims that several pods mount."""


def _workspace(common: Common, name: str | None, **options: Any) -> WorkspaceVolume:
    """A WorkspaceVolume (not started) with the common cluster access; kept when the command ends."""
    s = common.settings
    return WorkspaceVolume(
        name,
        start=False,
        keep=True,
        long_lived=True,
        namespace=s.namespace,
        kubectl=s.kubectl,
        kubeconfig=s.kubeconfig,
        context=s.context,
        remote_control_plane=s.remote_control_plane,
        certificate_authority=s.certificate_authority,
        insecure_skip_tls_verify=bool(s.insecure_skip_tls_verify),
        runner=base.kubectl_runner(),
        **options,
    )


def _label_pairs(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure(f"--label needs KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


@workspace_group.command(
    "create",
    epilog=with_exit_codes(
        "The claim carries kubectl-executor.io/lifetime=long-lived: gc leaves it alone;\n"
        "`workspace delete NAME` deletes it (and the static volume of --host-path).\n\n"
        "Examples:\n\n\b\n  kubectl-executor workspace create team-data --size 5Gi\n"
        "  kubectl-executor workspace create scratch --host-path /srv/scratch --node my-node"
    ),
)
@click.argument("name", required=False)
@click.option(
    "--size",
    default="1Gi",
    show_default=True,
    envvar=_workspace_env("WORKSPACE_SIZE"),
    show_envvar=True,
    help="storage to request",
)
@click.option(
    "--storage-class",
    envvar=_workspace_env("STORAGE_CLASS"),
    show_envvar=True,
    help="storage class [default: the cluster's default class; '' for none]",
)
@click.option(
    "--access-mode",
    type=ACCESS_MODES,
    default="ReadWriteMany",
    show_default=True,
    envvar=_workspace_env("WORKSPACE_ACCESS_MODE"),
    show_envvar=True,
    help="access mode of the claim",
)
@click.option(
    "--fallback-access-mode", type=ACCESS_MODES, help="used when the provisioner refuses --access-mode"
)
@click.option(
    "--host-path", help="make a static hostPath PersistentVolume at this node path (single-node clusters)"
)
@click.option("--local", is_flag=True, help="with --host-path: a `local` volume instead (needs --node)")
@click.option("--node", help="pin the static volume to this node (kubernetes.io/hostname)")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="label of the claim (repeatable)")
@click.option(
    "--bind-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    envvar=_workspace_env("BIND_TIMEOUT"),
    show_envvar=True,
    help="seconds to wait until the claim is bound",
)
@click.option("--print-manifest", is_flag=True, help="print what would be created (a JSON List) and exit")
@access_options
@output_options
@command
def workspace_create(
    common: Common,
    name: str | None,
    size: str,
    storage_class: str | None,
    access_mode: str,
    fallback_access_mode: str | None,
    host_path: str | None,
    local: bool,
    node: str | None,
    labels: tuple[str, ...],
    bind_timeout: float,
    print_manifest: bool,
) -> int:
    """Create a shared workspace (a PersistentVolumeClaim) and wait until it is bound."""
    ws = _workspace(
        common,
        name,
        size=size,
        storage_class=storage_class,
        access_mode=access_mode,
        fallback_access_mode=fallback_access_mode,
        host_path=host_path,
        local=local,
        node=node,
        labels=_label_pairs(labels),
        bind_timeout=bind_timeout,
    )
    try:
        if print_manifest:
            items = ws.manifests(common.settings.namespace or "default")
            echo_json({"apiVersion": "v1", "kind": "List", "items": items})
            return EXIT_OK
        with progress(common, f"waiting for workspace {ws.name} to be bound"):
            result = ws.start()
    finally:
        ws.stop()  # keep=True: only releases the kubectl state (a failed start already cleaned up)
    if common.json:
        echo_json(result.model_dump(mode="json"))
    elif not common.quiet:
        if result.bound:
            modes = ",".join(result.volume_access_modes)
            click.echo(
                f"workspace {result.claim_name} is Bound to volume {result.volume_name} "
                f"({result.volume_capacity}, {modes}) in namespace {result.namespace}"
            )
        else:
            click.echo(
                f"workspace {result.claim_name} is {result.claim_status} in namespace {result.namespace}: "
                "its storage class binds it when the first pod mounts it"
            )
    return EXIT_OK


@workspace_group.command("list", epilog=with_exit_codes())
@click.option("-A", "--all-namespaces", is_flag=True, help="list in every namespace")
@click.option("--long-lived", is_flag=True, help="only workspaces made by `workspace create`")
@access_options
@output_options
@command
def workspace_list(common: Common, all_namespaces: bool, long_lived: bool) -> int:
    """List this tool's workspaces (its PersistentVolumeClaims)."""
    kubectl = make_kubectl(common)
    try:
        found = list_workspaces(kubectl, all_namespaces=all_namespaces, long_lived=long_lived)
    finally:
        kubectl.close()
    if common.json:
        echo_json([w.model_dump(mode="json") for w in found])
        return EXIT_OK
    if not found:
        if not common.quiet:
            click.echo("no kubectl-executor workspaces", err=True)
        return EXIT_OK
    header = ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "KIND", "AGE", "OWNER"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + header]
    for w in found:
        rows.append(
            ([w.namespace] if all_namespaces else [])
            + [
                w.name,
                w.status,
                w.volume or "",
                w.capacity or "",
                w.short_access_modes,
                "<none>" if w.storage_class is None else (w.storage_class or '""'),
                "long-lived" if w.long_lived else EPHEMERAL,
                format_age(w.age_seconds),
                w.owner,
            ]
        )
    print_table(rows)
    return EXIT_OK


@workspace_group.command(
    "delete", epilog=with_exit_codes("The data of a provisioned volume goes with it (reclaim policy).")
)
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="delete every workspace made by `workspace create` here")
@click.option("--wait", is_flag=True, help="wait until the claims are gone")
@access_options
@output_options
@command
def workspace_delete(common: Common, names: tuple[str, ...], all_: bool, wait: bool) -> int:
    """Delete workspaces made by this tool (never claims it did not make)."""
    if not names and not all_:
        raise Failure("name the workspaces to delete, or pass --all")
    kubectl = make_kubectl(common)
    try:
        targets: dict[str, PersistentVolumeClaim] = {}
        missing: list[str] = []
        if all_:
            for made in list_claims(kubectl, workspace_selector(long_lived=True)):
                targets[made.metadata.name] = made
        for name in names:
            claim = get_claim(kubectl, validate_dns_label(name, "workspace name"))
            if claim is None:
                missing.append(name)
            elif claim.metadata.labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                raise Failure(
                    f"PersistentVolumeClaim {name} was not made by kubectl-executor; not deleting it",
                    EXIT_TOOL_ERROR,
                )
            else:
                targets.setdefault(name, claim)
        delete_claims(kubectl, list(targets.values()), wait=wait)
    finally:
        kubectl.close()
    if common.json:
        echo_json({"deleted": list(targets), "not_found": missing})
    elif not common.quiet:
        for name in targets:
            click.echo(f"deleted workspace {name}")
        for name in missing:
            click.echo(f"workspace {name} not found", err=True)
    return EXIT_OK
