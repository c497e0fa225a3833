"""`kubectl-executor workspace create/list/delete` and `gc --volumes` with click's CliRunner on the
fake kubectl runner (never a real kubectl); the volume side is test_workspace.FakeStorage."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from kx_fakes import FakeRunner
from pytest_mock import MockerFixture
from test_workspace import FakeStorage, claim_json

from kubectl_executor import cli
from kubectl_executor._cluster.labels import (
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    VOLUME_ANNOTATION,
)
from kubectl_executor._cluster.manifest import ownership_labels
from kubectl_executor.cli import base as cli_base
from kubectl_executor.settings import ENV_PREFIX

MINE = {**ownership_labels("s1", 1_700_000_000, 4242, host="h"), LIFETIME_LABEL: LONG_LIVED}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture
def wired(
    mocker: MockerFixture, fake_runner: FakeRunner, fake_kubectl: str, monkeypatch: pytest.MonkeyPatch
) -> FakeRunner:
    """Every kubectl the CLI starts goes to the fake runner; the fake binary is found via the env."""
    mocker.patch.object(cli_base, "kubectl_runner", return_value=fake_runner)
    mocker.patch.object(cli_base, "stderr_is_tty", return_value=False)
    monkeypatch.setenv(ENV_PREFIX + "KUBECTL", fake_kubectl)
    return fake_runner


@pytest.fixture
def storage(wired: FakeRunner) -> FakeStorage:
    return FakeStorage(wired)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.cli, list(args), env=env, catch_exceptions=False)


def verbs(runner: FakeRunner, *prefix: str) -> list[list[str]]:
    return [c.args for c in runner.runs if c.args[: len(prefix)] == list(prefix)]


def test_help_lists_the_group_and_the_env_fallbacks() -> None:
    top = invoke("--help").output
    assert "workspace" in top
    group = invoke("workspace", "--help").output
    assert all(name in group for name in ("create", "list", "delete"))
    create = invoke("workspace", "create", "--help").output
    for text in (
        "KUBECTL_EXECUTOR_STORAGE_CLASS",
        "KUBECTL_EXECUTOR_WORKSPACE_SIZE",
        "KUBECTL_EXECUTOR_NAMESPACE",
        "125",
    ):
        assert text in create


def test_create_waits_until_bound_and_leaves_a_long_lived_claim(
    wired: FakeRunner, storage: FakeStorage
) -> None:
    done = invoke("workspace", "create", "team-data", "--size", "5Gi", "--label", "team=a", "-o", "json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["claim_name"] == "team-data" and result["claim_status"] == "Bound"
    assert result["requested_storage"] == "5Gi" and result["volume_name"] == "pvc-uid-team-data-1"
    labels = storage.created[0]["metadata"]["labels"]
    assert labels[LIFETIME_LABEL] == LONG_LIVED and labels["team"] == "a"
    assert labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert verbs(wired, "delete") == [] and "team-data" in storage.claims  # kept after the command
    text = invoke("workspace", "create", "other")
    assert text.exit_code == 0
    assert text.stdout.startswith("workspace other is Bound to volume pvc-uid-other-2 (1Gi, ReadWriteMany)")


def test_create_reads_its_options_from_the_environment(wired: FakeRunner, storage: FakeStorage) -> None:
    env = {
        ENV_PREFIX + "STORAGE_CLASS": "fast",
        ENV_PREFIX + "WORKSPACE_SIZE": "3Gi",
        ENV_PREFIX + "WORKSPACE_ACCESS_MODE": "ReadWriteOnce",
        ENV_PREFIX + "NAMESPACE": "team",
    }
    assert invoke("workspace", "create", "envy", env=env).exit_code == 0
    spec = storage.created[0]["spec"]
    assert spec["storageClassName"] == "fast" and spec["resources"]["requests"]["storage"] == "3Gi"
    assert spec["accessModes"] == ["ReadWriteOnce"]
    assert "--namespace=team" in wired.runs[0].argv
    flag = invoke("workspace", "create", "flagged", "--storage-class", "slow", env=env)
    assert flag.exit_code == 0 and storage.created[1]["spec"]["storageClassName"] == "slow"  # flags win


def test_print_manifest_creates_nothing(wired: FakeRunner, storage: FakeStorage) -> None:
    done = invoke(
        "workspace", "create", "static", "--host-path", "/srv/data", "--node", "n1", "--print-manifest"
    )
    assert done.exit_code == 0, done.output
    listing = json.loads(done.stdout)
    assert listing["kind"] == "List"
    kinds = [i["kind"] for i in listing["items"]]
    assert kinds == ["PersistentVolume", "PersistentVolumeClaim"]
    pv, claim = listing["items"]
    assert claim["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pv["spec"]["claimRef"] == {"namespace": "default", "name": "static"}
    assert wired.runs == [] and storage.created == []


def test_a_claim_that_never_binds_exits_125_and_is_deleted(wired: FakeRunner, storage: FakeStorage) -> None:
    storage.policy = storage.never
    done = invoke(
        "workspace",
        "create",
        "never",
        "--storage-class",
        "no-provisioner",
        "--bind-timeout",
        "0.3",
        "-o",
        "json",
    )
    assert done.exit_code == cli.EXIT_TOOL_ERROR
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "ClaimNotBoundError" and error["exit_code"] == 125
    assert 'storage class "no-provisioner"' in error["message"] and "ProvisioningFailed" in error["message"]
    assert "never" not in storage.claims


@pytest.mark.parametrize(
    "args",
    [
        ["--size", "lots"],
        ["--label", "novalue"],
        ["--local", "--host-path", "/srv/x"],
        ["--access-mode", "ReadWriteSometimes"],
        ["--bind-timeout", "0"],
    ],
)
def test_bad_options_are_usage_errors_before_any_kubectl(wired: FakeRunner, args: list[str]) -> None:
    done = invoke("workspace", "create", "ws", *args)
    assert done.exit_code == cli.EXIT_USAGE, done.output
    assert wired.runs == []


def test_list_shows_this_tools_claims(wired: FakeRunner, storage: FakeStorage) -> None:
    storage.claims["a"] = claim_json("a", phase="Bound", volume="pv-a", labels=MINE)
    storage.claims["b"] = claim_json(
        "b",
        labels={k: v for k, v in MINE.items() if k != LIFETIME_LABEL},
        annotations={VOLUME_ANNOTATION: "pv-b"},
    )
    storage.claims["theirs"] = claim_json("theirs", labels={"app": "x"})
    table = invoke("workspace", "list").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS",
        "MODES",
        "STORAGECLASS",
        "KIND",
        "AGE",
        "OWNER",
    ]
    assert table[1].split()[:7] == ["a", "Bound", "pv-a", "1Gi", "RWX", "standard", "long-lived"]
    assert table[2].split()[:6] == ["b", "Pending", "1Gi", "RWX", "standard", "ephemeral"]
    assert len(table) == 3
    listed = json.loads(invoke("workspace", "list", "--long-lived", "-o", "json").stdout)
    assert [w["name"] for w in listed] == ["a"]
    invoke("workspace", "list", "-A")
    assert "--all-namespaces" in verbs(wired, "get", "pvc")[-1]


def test_delete_only_deletes_this_tools_workspaces(wired: FakeRunner, storage: FakeStorage) -> None:
    storage.claims["mine"] = claim_json("mine", labels=MINE)
    storage.claims["theirs"] = claim_json("theirs", labels={"app": "x"})
    refused = invoke("workspace", "delete", "theirs", "-o", "json")
    assert refused.exit_code == cli.EXIT_TOOL_ERROR
    assert "not made by kubectl-executor" in json.loads(refused.stdout)["error"]["message"]
    assert "theirs" in storage.claims and verbs(wired, "delete") == []
    done = invoke("workspace", "delete", "mine", "ghost", "-o", "json")
    assert done.exit_code == 0
    assert json.loads(done.stdout) == {"deleted": ["mine"], "not_found": ["ghost"]}
    assert sorted(storage.claims) == ["theirs"]
    assert invoke("workspace", "delete").exit_code == cli.EXIT_USAGE


def test_delete_all_takes_the_long_lived_ones(wired: FakeRunner, storage: FakeStorage) -> None:
    storage.claims["kept"] = claim_json("kept", labels=MINE)
    ephemeral = {k: v for k, v in MINE.items() if k != LIFETIME_LABEL}
    storage.claims["ephemeral"] = claim_json("ephemeral", labels=ephemeral)
    done = invoke("workspace", "delete", "--all", "--wait")
    assert done.exit_code == 0 and "deleted workspace kept" in done.stdout
    assert sorted(storage.claims) == ["ephemeral"]
    assert "--wait=true" in verbs(wired, "delete", "pvc")[0]


def test_gc_volumes_collects_orphaned_claims(wired: FakeRunner, storage: FakeStorage) -> None:
    dead = ownership_labels("s1", int(time.time()) - 60, 999_999, host=socket.gethostname())
    storage.claims["orphan"] = claim_json("orphan", labels=dead)
    plain = invoke("gc")
    assert plain.exit_code == 0 and "orphan" in storage.claims  # opt-in
    dry = invoke("gc", "--volumes", "--dry-run")
    assert "would delete pvc team/orphan: owner-gone" in dry.stdout
    done = json.loads(invoke("gc", "--volumes", "-o", "json").stdout)
    assert [(c["kind"], c["name"], c["deleted"]) for c in done] == [("pvc", "orphan", True)]
    assert "orphan" not in storage.claims
