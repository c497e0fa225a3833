"""Long-lived pods and cleaning up: up, down, ls, gc."""

from __future__ import annotations

import re
from dataclasses import asdict

import click  # a core dependency: the command works on the base install

from .._cluster.gc import GcCandidate, selector
from .._cluster.labels import (
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
)
from .._cluster.manifest import validate_dns_label
from .._cluster.pod import apply_pod, delete_pod, get_pod, list_pods, wait_ready
from ..gc import collect_garbage
from .base import (
    EXIT_OK,
    EXIT_TOOL_ERROR,
    Common,
    Failure,
    access_options,
    command,
    echo_json,
    make_executor,
    make_kubectl,
    output_options,
    pod_options,
    progress,
    show_manifest,
    with_exit_codes,
)
from .output import format_age, pod_info, print_table

DEFAULT_UP_DEADLINE = 24 * 3600


@click.command(
    epilog=with_exit_codes(
        "The pod carries the label kubectl-executor.io/lifetime=long-lived: gc leaves it alone unless\n"
        "--include-long-lived; `down NAME` deletes it. Use it with run/exec/call/cp --pod NAME."
    )
)
@click.argument("name")
@click.option(
    "--deadline",
    type=click.IntRange(min=0),
    default=DEFAULT_UP_DEADLINE,
    show_default=True,
    help="activeDeadlineSeconds of the pod (0: none)",
)
@access_options
@pod_options
@output_options
@command
def up(common: Common, name: str, deadline: int, env: tuple[str, ...], print_manifest: bool) -> int:
    """Create a named long-lived pod and wait until it is ready."""
    validate_dns_label(name, "pod name")
    executor = make_executor(
        common,
        env=env,
        pod={"labels": {LIFETIME_LABEL: LONG_LIVED}, "active_deadline_seconds": deadline or None},
        pod_name=name,
    )
    if print_manifest:
        return show_manifest(executor)
    try:
        kubectl = executor.kubectl
        existing = get_pod(kubectl, name)
        if existing is not None:
            if existing.metadata.labels.get(LIFETIME_LABEL) != LONG_LIVED:
                raise Failure(f"pod {name} exists and was not made by `up`", EXIT_TOOL_ERROR)
            pod = existing
        else:
            apply_pod(kubectl, executor.manifest())
            try:
                with progress(common, f"starting pod {name}"):
                    pod = wait_ready(kubectl, name, executor.run_options.startup_timeout)
            except BaseException:
                delete_pod(kubectl, name)
                raise
    finally:
        executor.stop()
    info = pod_info(pod)
    if common.json:
        echo_json(info)
    elif not common.quiet:
        click.echo(
            f"pod {name} is {'ready' if pod.ready else pod.status.phase} in namespace {info['namespace']}"
        )
    return EXIT_OK


@click.command(epilog=with_exit_codes())
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="delete every long-lived pod in the namespace")
@click.option("--wait", is_flag=True, help="wait until the pods are gone")
@access_options
@output_options
@command
def down(common: Common, names: tuple[str, ...], all_: bool, wait: bool) -> int:
    """Delete long-lived pods made by `up` (never pods this tool did not make)."""
    if not names and not all_:
        raise Failure("name the pods to delete, or pass --all")
    kubectl = make_kubectl(common)
    try:
        targets: list[str] = []
        missing: list[str] = []
        if all_:
            found = list_pods(kubectl, f"{selector()},{LIFETIME_LABEL}={LONG_LIVED}")
            targets = [p.metadata.name for p in found]
        for name in names:
            pod = get_pod(kubectl, validate_dns_label(name, "pod name"))
            if pod is None:
                missing.append(name)
            elif pod.metadata.labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                raise Failure(
                    f"pod {name} was not made by kubectl-executor; not deleting it", EXIT_TOOL_ERROR
                )
            elif name not in targets:
                targets.append(name)
        for name in targets:
            delete_pod(kubectl, name, wait=wait)
    finally:
        kubectl.close()
    if common.json:
        echo_json({"deleted": targets, "not_found": missing})
    elif not common.quiet:
        for name in targets:
            click.echo(f"deleted pod {name}")
        for name in missing:
            click.echo(f"pod {name} not found", err=True)
    return EXIT_OK


@click.command("ls", epilog=with_exit_codes())
@click.option("-A", "--all-namespaces", is_flag=True, help="list in every namespace")
@click.option("--long-lived", is_flag=True, help="only pods made by `up`")
@access_options
@output_options
@command
def ls(common: Common, all_namespaces: bool, long_lived: bool) -> int:
    """List this tool's pods: long-lived ones (from `up`) and ephemeral ones (of running executors)."""
    sel = selector() + (f",{LIFETIME_LABEL}={LONG_LIVED}" if long_lived else "")
    kubectl = make_kubectl(common)
    try:
        pods = list_pods(kubectl, sel, all_namespaces=all_namespaces)
    finally:
        kubectl.close()
    infos = [pod_info(p) for p in pods]
    if common.json:
        echo_json(infos)
        return EXIT_OK
    if not infos:
        if not common.quiet:
            click.echo("no kubectl-executor pods", err=True)
        return EXIT_OK
    header = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME",
        "KIND",
        "PHASE",
        "READY",
        "AGE",
        "OWNER",
        "IMAGE",
    ]
    rows = [header]
    for i in infos:
        rows.append(
            ([i["namespace"]] if all_namespaces else [])
            + [
                i["name"],
                i["kind"],
                i["phase"],
                "yes" if i["ready"] else "no",
                format_age(i["age_seconds"]),
                i["owner"],
                i["image"] or "",
            ]
        )
    print_table(rows)
    return EXIT_OK


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 10m, 2h or 1d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@click.command(
    epilog=with_exit_codes(
        "A pod is deleted when it finished (Failed/Succeeded, e.g. DeadlineExceeded), when its owner\n"
        "process on this host is gone, or when it is older than --older-than. Pods of live owners and\n"
        "long-lived pods (from `up`) are kept unless --include-live-owners / --include-long-lived."
    )
)
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    help="also delete pods older than this (90s, 10m, 2h, 1d)",
)
@click.option("--owner-id", help="only pods of this owner (an executor's owner_id)")
@click.option("--session", hidden=True, help="deprecated alias of --owner-id")
@click.option("--owner-host", help="only pods created from this host")
@click.option(
    "--include-live-owners", is_flag=True, help="also pods whose owner process is still running here"
)
@click.option("--include-long-lived", is_flag=True, help="also long-lived pods made by `up`")
@click.option(
    "--volumes",
    is_flag=True,
    help="also workspace claims (PersistentVolumeClaims) by the same rules: deletes data",
)
@click.option("--dry-run", is_flag=True, help="show what would be deleted, delete nothing")
@click.option("-A", "--all-namespaces", is_flag=True, help="look in every namespace")
@access_options
@output_options
@command
def gc(
    common: Common,
    older_than: str | None,
    owner_id: str | None,
    session: str | None,
    owner_host: str | None,
    include_live_owners: bool,
    include_long_lived: bool,
    volumes: bool,
    dry_run: bool,
    all_namespaces: bool,
) -> int:
    """Delete this tool's orphaned pods (and, with --volumes, workspace claims)."""
    ttl = parse_duration(older_than) if older_than is not None else None
    if session is not None:
        if owner_id is not None and owner_id != session:
            raise Failure("give --owner-id or its deprecated alias --session, not both")
        click.echo("warning: --session is deprecated: use --owner-id", err=True)
        owner_id = session
    kubectl = make_kubectl(common)
    try:
        found = collect_garbage(
            kubectl,
            older_than=ttl,
            owner_id=owner_id,
            owner_host=owner_host,
            include_live_owners=include_live_owners,
            include_long_lived=include_long_lived,
            dry_run=dry_run,
            all_namespaces=all_namespaces,
            include_volumes=volumes,
        )
    finally:
        kubectl.close()
    if common.json:
        # "session": owner_id under its former name (deprecated), for scripts that read it.
        echo_json([{**asdict(c), "session": c.owner_id} for c in found])
    elif not common.quiet:
        _print_gc(found, dry_run)
    return EXIT_OK


def _print_gc(found: list[GcCandidate], dry_run: bool) -> None:
    if not found:
        click.echo("nothing to collect", err=True)
    for c in found:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {c.kind} {c.namespace}/{c.name}: {c.reason} ({c.detail})")
