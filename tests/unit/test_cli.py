"""The command line with click's CliRunner on the fake kubectl runner (never a real kubectl)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kx_fakes import ExecReply, FakeRunner, RunCall, exit_marker, pod_json, reply_with, start_marker
from pytest_mock import MockerFixture

from kubectl_executor import cli
from kubectl_executor._cluster.labels import LIFETIME_LABEL, LONG_LIVED, MANAGED_BY, MANAGED_BY_LABEL
from kubectl_executor._cluster.manifest import ownership_labels
from kubectl_executor._cluster.runner import Completed
from kubectl_executor._exec.dispatcher import TOOL_RUNNER_FILE
from kubectl_executor.cli import base as cli_base
from kubectl_executor.cli import doctor as cli_doctor
from kubectl_executor.cli import pods as cli_pods
from kubectl_executor.errors import TransferError
from kubectl_executor.executor import KubernetesCommandLineCodeExecutor
from kubectl_executor.settings import ENV_PREFIX


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
    """Every kubectl the CLI starts goes to the fake runner; the fake binary is found via the env
    (set through monkeypatch, so that it does not leak into later tests)."""
    mocker.patch.object(cli_base, "kubectl_runner", return_value=fake_runner)
    mocker.patch.object(cli_base, "stderr_is_tty", return_value=False)
    monkeypatch.setenv(ENV_PREFIX + "KUBECTL", fake_kubectl)
    return fake_runner


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.cli, list(args), input=input, env=env, catch_exceptions=False)


def answer(fake: FakeRunner, handler: Any) -> None:
    """Answer some kubectl runs ourselves (``handler(args) -> (rc, stdout, stderr) | None``)."""

    def on_run(call: RunCall) -> Completed | None:
        reply = handler(call.args)
        if reply is None:
            return None
        rc, out, err = reply
        return Completed(tuple(call.argv), rc, out.encode(), err.encode())

    fake.on_run = on_run


# -- help, parsing, settings ---------------------------------------------------------------------


def test_help_documents_exit_codes_and_env_vars() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    for text in ("125", "126", "127", "130", "KUBECTL_EXECUTOR_NAMESPACE"):
        assert text in top.output
    run_help = invoke("run", "--help").output
    assert "KUBECTL_EXECUTOR_TIMEOUT" in run_help and "--print-manifest" in run_help and "125" in run_help


def test_help_shows_each_commands_own_timeout_default() -> None:
    """``mcp`` applies its own run timeout (below the MCP clients' request timeouts); its help says so."""
    from kubectl_executor.defaults import MCP_RUN_TIMEOUT, RUN_TIMEOUT

    assert MCP_RUN_TIMEOUT != RUN_TIMEOUT
    assert f"[default: {RUN_TIMEOUT}]" in invoke("exec", "--help").output
    mcp_help = invoke("mcp", "--help").output
    assert f"[default: {MCP_RUN_TIMEOUT}]" in mcp_help and f"[default: {RUN_TIMEOUT}]" not in mcp_help


def test_help_names_the_variable_of_every_option_that_reads_one() -> None:
    """The top help's claim: an option reads the environment exactly when its help shows [env var:]."""
    import click

    def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
        found = []
        for name, sub in group.commands.items():
            found.append((prefix + name, sub))
            if isinstance(sub, click.Group):
                found += commands(sub, prefix + name + " ")
        return found

    for name, command in commands(cli.cli):
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                assert param.show_envvar, f"{name} {param.opts[0]} reads {param.envvar} without saying so"


def test_usage_errors_exit_2() -> None:
    assert invoke("run").exit_code == 2  # missing FILE
    assert invoke("exec", "-c", "x", "--timeout", "0").exit_code == 2
    assert invoke("exec", "-c", "x", "-o", "yaml").exit_code == 2
    assert invoke("nope").exit_code == 2


def test_exec_streams_output_and_exits_with_the_codes_exit_code(wired: FakeRunner) -> None:
    wired.exec_replies.append(reply_with(b"hello\n", 3, stderr=b"oops\n"))
    result = invoke("exec", "-c", "print('hello')")
    assert result.exit_code == 3
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    (request,) = wired.ran_blocks
    assert request.runner == "python" and request.code == b"print('hello')"
    assert wired.pods == {}  # the pod was created and deleted again
    assert len(wired.runs_of("apply")) == 1 and len(wired.runs_of("delete")) == 1


def test_exec_json_is_the_result_model(wired: FakeRunner) -> None:
    wired.exec_replies.append(reply_with(b"42\n", 0))
    result = invoke("exec", "-c", "print(42)", "-o", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["exit_code"] == 0 and data["stdout"] == "42\n" and data["output"] == "42\n"
    assert data["code_file"].startswith("/workspace/tmp_code_") and data["timed_out"] is False


def test_several_blocks_stop_at_the_first_failure(wired: FakeRunner) -> None:
    wired.exec_replies.extend([reply_with(b"a\n", 0), reply_with(b"b\n", 4)])
    result = invoke("exec", "--lang", "sh", "-c", "echo a", "-c", "echo b; exit 4", "-c", "echo c")
    assert result.exit_code == 4
    assert [r.code for r in wired.ran_blocks] == [b"echo a", b"echo b; exit 4"]


@pytest.mark.parametrize(
    ("name", "lang", "runner"),
    [
        ("job.py", None, "python"),
        ("job.sh", None, "sh"),
        ("job.bash", None, "bash"),
        ("job.txt", "python", "python"),
    ],
)
def test_run_takes_the_language_from_the_extension_or_lang(
    wired: FakeRunner, tmp_path: Path, name: str, lang: str | None, runner: str
) -> None:
    path = tmp_path / name
    path.write_text("echo hi\n")
    wired.exec_replies.append(reply_with(b"hi\n", 0))
    args = ["run", str(path)] + (["--lang", lang] if lang else [])
    assert invoke(*args).exit_code == 0
    assert wired.ran_blocks[0].runner == runner
    assert wired.ran_blocks[0].code == b"echo hi\n"


def test_run_refuses_an_unknown_extension_before_touching_the_cluster(
    wired: FakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    result = invoke("run", str(path))
    assert result.exit_code == 2 and "--lang" in result.stderr
    assert wired.runs == [] and wired.spawns == []


def test_run_reads_stdin(wired: FakeRunner) -> None:
    wired.exec_replies.append(reply_with(b"", 0))
    assert invoke("run", "-", input="echo from-stdin\n").exit_code == 0
    assert wired.ran_blocks[0].runner == "sh"  # inferred: starts like a shell command
    assert wired.ran_blocks[0].code == b"echo from-stdin\n"


def test_env_var_fallback_and_flag_precedence(wired: FakeRunner) -> None:
    wired.exec_replies.extend([reply_with(b"", 0), reply_with(b"", 0)])
    assert invoke("exec", "-c", "x", env={"KUBECTL_EXECUTOR_NAMESPACE": "from-env"}).exit_code == 0
    assert "--namespace=from-env" in wired.runs_of("apply")[0].argv
    wired.runs.clear()
    result = invoke("exec", "-c", "x", "-n", "from-flag", env={"KUBECTL_EXECUTOR_NAMESPACE": "from-env"})
    assert result.exit_code == 0
    assert "--namespace=from-flag" in wired.runs_of("apply")[0].argv


def test_env_timeout_reaches_the_pod(wired: FakeRunner) -> None:
    wired.exec_replies.append(reply_with(b"", 0))
    assert invoke("exec", "-c", "x", env={"KUBECTL_EXECUTOR_TIMEOUT": "7"}).exit_code == 0
    assert wired.ran_blocks[0].timeout == "7"


def test_invalid_env_setting_is_a_usage_error_naming_the_variable(wired: FakeRunner) -> None:
    result = invoke("exec", "-c", "x", env={"KUBECTL_EXECUTOR_NAMESPACE": "Bad_NS"})
    assert result.exit_code == 2
    assert "KUBECTL_EXECUTOR_NAMESPACE" in result.stderr
    assert wired.runs == []


def test_env_flag_reaches_the_code(wired: FakeRunner) -> None:
    wired.exec_replies.append(reply_with(b"", 0))
    assert invoke("exec", "-c", "x", "--env", "GREETING=hi there").exit_code == 0
    manifest = json.loads(wired.runs_of("apply")[0].stdin or b"{}")
    env = {e["name"]: e["value"] for e in manifest["spec"]["containers"][0]["env"]}
    assert env["GREETING"] == "hi there"
    assert invoke("exec", "-c", "x", "--env", "NOEQUALS").exit_code == 2


def test_print_manifest_runs_no_kubectl(wired: FakeRunner) -> None:
    result = invoke("exec", "-c", "x", "--print-manifest", "--image", "python:3.12-slim")
    assert result.exit_code == 0
    manifest = json.loads(result.stdout)
    assert manifest["kind"] == "Pod"
    assert manifest["spec"]["containers"][0]["image"] == "python:3.12-slim"
    assert manifest["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert wired.runs == [] and wired.spawns == []


# -- error mapping -------------------------------------------------------------------------------


def test_a_pod_that_cannot_start_is_a_tool_error(wired: FakeRunner) -> None:
    wired.watch_pod = pod_json(
        "x", phase="Pending", ready=False, waiting={"reason": "ImagePullBackOff", "message": "no such image"}
    )
    result = invoke("exec", "-c", "x")
    assert result.exit_code == cli.EXIT_TOOL_ERROR == 125
    assert "ImagePullBackOff" in result.stderr and "no such image" in result.stderr
    assert wired.pods == {}  # deleted after the failed start


def test_json_errors_go_to_stdout_with_the_exit_code(wired: FakeRunner) -> None:
    wired.watch_pod = pod_json("x", phase="Pending", ready=False, waiting={"reason": "ErrImagePull"})
    result = invoke("exec", "-c", "x", "-o", "json")
    assert result.exit_code == 125
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "PodStartError" and error["exit_code"] == 125


def test_missing_kubectl_exits_127(tmp_path: Path) -> None:
    result = invoke("exec", "-c", "x", "--kubectl", str(tmp_path / "no-kubectl"))
    assert result.exit_code == cli.EXIT_KUBECTL_NOT_FOUND == 127
    assert "kubectl-executor[kubectl]" in result.stderr


def test_lost_completion_marker_exits_126(wired: FakeRunner) -> None:
    wired.exec_replies.append(lambda req: ExecReply(start_marker(req.nonce) + b"partial", returncode=0))
    result = invoke("exec", "-c", "x")
    assert result.exit_code == cli.EXIT_OUTCOME_UNKNOWN == 126
    assert "may or may not have run" in result.stderr


def test_forbidden_points_at_doctor(wired: FakeRunner) -> None:
    forbidden = 'Error from server (Forbidden): pods is forbidden: User "u" cannot create resource "pods" in API group "" in the namespace "ns"\n'
    answer(wired, lambda args: (1, "", forbidden) if args[:1] == ["apply"] else None)
    result = invoke("exec", "-c", "x")
    assert result.exit_code == 125
    assert "doctor" in result.stderr and "'create'" in result.stderr


def test_timeout_exits_124_with_a_note(wired: FakeRunner) -> None:
    wired.exec_replies.append(reply_with(b"working\n", 124, timed_out=1))
    result = invoke("exec", "-c", "x", "--timeout", "3")
    assert result.exit_code == 124
    assert result.stdout == "working\n"
    assert "longer than 3s" in result.stderr


def test_ctrl_c_exits_130_and_deletes_the_pod(wired: FakeRunner, mocker: MockerFixture) -> None:
    mocker.patch.object(
        KubernetesCommandLineCodeExecutor, "execute_code_blocks", side_effect=KeyboardInterrupt
    )
    result = invoke("exec", "-c", "x")
    assert result.exit_code == 130
    assert len(wired.runs_of("apply")) == 1 and wired.pods == {}


def test_save_only_language_prints_where_it_was_saved(wired: FakeRunner) -> None:
    wired.exec_replies.append(lambda req: ExecReply(start_marker(req.nonce) + exit_marker(req.nonce, 0)))
    result = invoke("exec", "--lang", "html", "-c", "<p>hi</p>")
    assert result.exit_code == 0
    assert "Code saved to /workspace/" in result.stdout


def test_unknown_language_exits_1_with_the_message_on_stderr(wired: FakeRunner) -> None:
    result = invoke("exec", "--lang", "cobol", "-c", "x")
    assert result.exit_code == 1
    assert "Unsupported language cobol (runs python" in result.stderr


# -- progress and logging -------------------------------------------------------------------------


def test_progress_only_on_a_terminal_and_not_when_quiet(wired: FakeRunner, mocker: MockerFixture) -> None:
    wired.default_exec = reply_with(b"", 0)
    assert "starting pod" not in invoke("exec", "-c", "x").stderr
    mocker.patch.object(cli_base, "stderr_is_tty", return_value=True)
    assert "starting pod kx-" in invoke("exec", "-c", "x").stderr
    assert "starting pod" not in invoke("exec", "-c", "x", "-q").stderr
    assert "starting pod" not in invoke("exec", "-c", "x", "-o", "json").stderr


@pytest.mark.parametrize(
    ("flags", "level"),
    [((), logging.WARNING), (("-v",), logging.INFO), (("-vv",), logging.DEBUG), (("-q",), logging.ERROR)],
)
def test_verbosity_sets_the_log_level(wired: FakeRunner, flags: tuple[str, ...], level: int) -> None:
    wired.default_exec = reply_with(b"", 0)
    assert invoke("exec", "-c", "x", *flags).exit_code == 0
    assert logging.getLogger().level == level


# -- attach, up, down, ls --------------------------------------------------------------------------


def ours(name: str, *, long_lived: bool = False, pid: int = 1, **kw: Any) -> dict[str, Any]:
    labels = ownership_labels("s1", 1_700_000_000, pid)
    if long_lived:
        labels[LIFETIME_LABEL] = LONG_LIVED
    return pod_json(name, labels=labels, **kw)


def test_pod_flag_attaches_and_never_deletes(wired: FakeRunner) -> None:
    wired.pods["box"] = ours("box", long_lived=True)
    wired.exec_replies.append(reply_with(b"in box\n", 0))
    result = invoke("exec", "-c", "x", "--pod", "box")
    assert result.exit_code == 0 and result.stdout == "in box\n"
    assert wired.runs_of("apply") == [] and wired.runs_of("delete") == []
    assert "box" in wired.execs()[0].args


def test_up_creates_a_long_lived_pod_and_leaves_it(wired: FakeRunner) -> None:
    result = invoke("up", "box", "--deadline", "600", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "box"
    manifest = json.loads(wired.runs_of("apply")[0].stdin or b"{}")
    assert manifest["metadata"]["name"] == "box"
    assert manifest["metadata"]["labels"][LIFETIME_LABEL] == LONG_LIVED
    assert manifest["spec"]["activeDeadlineSeconds"] == 600
    assert "box" in wired.pods and wired.runs_of("delete") == []


def test_up_is_idempotent_and_refuses_foreign_pods(wired: FakeRunner) -> None:
    wired.pods["box"] = ours("box", long_lived=True)
    assert invoke("up", "box").exit_code == 0
    assert wired.runs_of("apply") == []
    wired.pods["other"] = pod_json("other", labels={"app": "x"})
    result = invoke("up", "other")
    assert result.exit_code == 125 and "not made by `up`" in result.stderr


def test_up_rejects_an_invalid_name(wired: FakeRunner) -> None:
    assert invoke("up", "Bad_Name").exit_code == 2
    assert wired.runs == []


def test_down_deletes_ours_only(wired: FakeRunner) -> None:
    wired.pods["box"] = ours("box", long_lived=True)
    wired.pods["foreign"] = pod_json("foreign", labels={"app": "x"})
    result = invoke("down", "box", "ghost", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"deleted": ["box"], "not_found": ["ghost"]}
    assert "box" not in wired.pods
    refused = invoke("down", "foreign")
    assert refused.exit_code == 125 and "foreign" in wired.pods
    assert invoke("down").exit_code == 2


def test_down_all_deletes_every_long_lived_pod(wired: FakeRunner) -> None:
    wired.pods["a"] = ours("a", long_lived=True)
    wired.pods["b"] = ours("b", long_lived=True)
    wired.pods["ephemeral"] = ours("ephemeral")
    assert invoke("down", "--all").exit_code == 0
    assert list(wired.pods) == ["ephemeral"]


def test_ls_lists_our_pods(wired: FakeRunner) -> None:
    wired.pods["box"] = ours("box", long_lived=True)
    wired.pods["kx-1"] = ours("kx-1")
    data = json.loads(invoke("ls", "-o", "json").stdout)
    assert {(p["name"], p["kind"], p["ready"]) for p in data} == {
        ("box", "long-lived", True),
        ("kx-1", "ephemeral", True),
    }
    assert {p["owner_id"] for p in data} == {p["session"] for p in data}  # "session": deprecated name
    table = invoke("ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "PHASE", "READY", "AGE", "OWNER", "IMAGE"]
    assert len(table) == 3
    assert [p["name"] for p in json.loads(invoke("ls", "--long-lived", "-o", "json").stdout)] == ["box"]


# -- gc ------------------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_gc_deletes_orphans_and_dry_run_only_reports(wired: FakeRunner) -> None:
    labels = ownership_labels("s1", 1_700_000_000, dead_pid(), host=socket.gethostname())
    wired.pods["orphan"] = pod_json("orphan", labels=labels)
    wired.pods["mine"] = pod_json("mine", labels=ownership_labels("s2", int(time.time()), os.getpid()))
    dry = invoke("gc", "--dry-run")
    assert dry.exit_code == 0 and "would delete pod default/orphan: owner-gone" in dry.stdout
    assert "orphan" in wired.pods
    done = json.loads(invoke("gc", "-o", "json").stdout)
    assert [(c["name"], c["reason"], c["deleted"]) for c in done] == [("orphan", "owner-gone", True)]
    assert list(wired.pods) == ["mine"]


def test_gc_passes_filters(wired: FakeRunner, mocker: MockerFixture) -> None:
    collect = mocker.patch.object(cli_pods, "collect_garbage", return_value=[])
    args = ["gc", "--older-than", "2h", "--owner-id", "abc", "--owner-host", "h", "--include-live-owners"]
    assert invoke(*args, "--include-long-lived", "-A").exit_code == 0
    kwargs = collect.call_args.kwargs
    assert kwargs["older_than"] == 7200 and kwargs["owner_id"] == "abc" and kwargs["owner_host"] == "h"
    assert kwargs["include_live_owners"] and kwargs["include_long_lived"] and kwargs["all_namespaces"]
    assert not kwargs["dry_run"]


def test_gc_session_is_a_deprecated_alias_of_owner_id(wired: FakeRunner, mocker: MockerFixture) -> None:
    collect = mocker.patch.object(cli_pods, "collect_garbage", return_value=[])
    result = invoke("gc", "--session", "abc")
    assert result.exit_code == 0 and collect.call_args.kwargs["owner_id"] == "abc"
    assert "--session is deprecated: use --owner-id" in result.stderr
    assert "--session" not in invoke("gc", "--help").stdout  # hidden: --owner-id is the documented one
    assert invoke("gc", "--session", "abc", "--owner-id", "xyz").exit_code == 2


def test_gc_json_keeps_the_former_session_key(wired: FakeRunner) -> None:
    labels = ownership_labels("s1", 1_700_000_000, dead_pid(), host=socket.gethostname())
    wired.pods["orphan"] = pod_json("orphan", labels=labels)
    (found,) = json.loads(invoke("gc", "--dry-run", "-o", "json").stdout)
    assert found["owner_id"] == found["session"] == "s1"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


def test_bad_duration_is_a_usage_error(wired: FakeRunner) -> None:
    result = invoke("gc", "--older-than", "soon")
    assert result.exit_code == 2 and "duration" in result.output
    assert wired.runs == []


# -- cp, call ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("box:data/in.csv", ("box", "data/in.csv")),
        ("box:", ("box", "")),
        ("./box:x", (None, "./box:x")),
        ("/tmp/a:b", (None, "/tmp/a:b")),
        ("local.txt", (None, "local.txt")),
        ("Box:x", (None, "Box:x")),
    ],
)
def test_parse_cp_path(spec: str, expected: tuple[str | None, str]) -> None:
    assert cli.parse_cp_path(spec) == expected


def test_cp_needs_exactly_one_pod_side(wired: FakeRunner) -> None:
    assert invoke("cp", "a", "b").exit_code == 2
    assert invoke("cp", "p:a", "q:b").exit_code == 2
    assert wired.runs == []


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        ("nocolon", "{}", "MODULE:FUNCTION"),
        ("mod:", "{}", "MODULE:FUNCTION"),
        ("mod:fn", "{bad", "not valid JSON"),
        ("mod:fn", "[1, 2]", "JSON object"),
        ("bad-module:fn", "{}", "MODULE:FUNCTION"),
        ("mod:not a name", "{}", "MODULE:FUNCTION"),
    ],
)
def test_call_validates_before_touching_the_cluster(
    wired: FakeRunner, target: str, args: str, message: str
) -> None:
    result = invoke("call", target, "--args", args)
    assert result.exit_code == 2 and message in result.stderr
    assert wired.runs == []


# -- doctor --------------------------------------------------------------------------------------


FULL_IMAGE = "sh yes\ntimeout yes\ntar yes\npython3 yes\npython no\n"


def doctor_cluster(
    fake: FakeRunner,
    *,
    denied: frozenset[str] = frozenset(),
    dry_run_error: str = "",
    tools: str = FULL_IMAGE,
) -> None:
    def handler(args: list[str]) -> tuple[int, str, str] | None:
        if args[:2] == ["version", "--client"]:
            return 0, json.dumps({"clientVersion": {"gitVersion": "v1.32.4"}}), ""
        if args[:1] == ["version"]:
            return 0, json.dumps({"clientVersion": {}, "serverVersion": {"gitVersion": "v1.33.0"}}), ""
        if args[:2] == ["config", "current-context"]:
            return 0, "kind-dev\n", ""
        if args[:2] == ["config", "view"]:
            return 0, "team", ""
        if args[:2] == ["auth", "can-i"]:
            what = args[2] + " " + args[3] + ("/exec" if "--subresource=exec" in args else "")
            return (1, "no\n", "") if what in denied else (0, "yes\n", "")
        if args[:1] == ["apply"] and "--dry-run=server" in args:
            return (1, "", dry_run_error) if dry_run_error else (0, "pod/kx-1 created (server dry run)\n", "")
        if args[:1] == ["exec"] and "sh" in args and "timeout" in args[-1]:
            return 0, tools, ""
        return None

    answer(fake, handler)


def test_doctor_all_green(wired: FakeRunner) -> None:
    doctor_cluster(wired)
    wired.exec_replies.append(reply_with(b"kx-roundtrip\n", 0))
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "v1.32.4" in out and "context kind-dev, namespace team" in out and "API server v1.33.0" in out
    assert "[ok  ] can-i create pods/exec" in out and "admitted by a server-side dry run" in out
    assert "has sh, timeout, tar, python" in out and "a code block ran" in out
    assert "kind: Role" not in out
    dry = next(c for c in wired.runs if "--dry-run=server" in c.args)
    assert json.loads(dry.stdin or b"{}")["kind"] == "Pod"
    assert wired.pods == {}  # the test pod is gone


def test_doctor_prints_the_role_when_access_is_missing(wired: FakeRunner) -> None:
    doctor_cluster(wired, denied=frozenset({"create pods/exec", "watch pods"}))
    result = invoke("doctor", "-n", "sandbox")
    assert result.exit_code == 1
    out = result.stdout
    assert "[FAIL] can-i watch pods" in out and "[FAIL] can-i create pods/exec" in out
    assert "kind: Role" in out and "namespace: sandbox" in out and 'resources: ["pods/exec"]' in out
    assert "[skip] image" in out
    assert wired.runs_of("apply") == [] or all("--dry-run=server" in c.args for c in wired.runs_of("apply"))


def test_doctor_reports_a_rejected_manifest_in_json(wired: FakeRunner) -> None:
    doctor_cluster(
        wired,
        dry_run_error='Error from server (Forbidden): pods "kx" is forbidden: violates PodSecurity "restricted:latest"',
    )
    result = invoke("doctor", "--skip-pod", "-o", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert data["ok"] is False and checks["pod manifest"]["status"] == "fail"
    assert "PodSecurity" in checks["pod manifest"]["detail"]
    assert checks["image"]["status"] == "skip" and data["role"] is None


@pytest.mark.parametrize(
    ("tools", "status", "detail"),
    [
        ("sh yes\ntimeout yes\ntar yes\npython3 no\npython no\n", "warn", "no python"),
        ("sh yes\ntimeout no\ntar no\npython3 yes\npython yes\n", "fail", "missing timeout, tar"),
    ],
)
def test_doctor_names_what_the_image_lacks(wired: FakeRunner, tools: str, status: str, detail: str) -> None:
    doctor_cluster(wired, tools=tools)
    wired.default_exec = reply_with(b"kx-roundtrip\n", 0)
    result = invoke("doctor", "-o", "json")
    image = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["image"]
    assert (image["status"], detail in image["detail"]) == (status, True)
    assert result.exit_code == (1 if status == "fail" else 0)


def test_doctor_without_kubectl_fails_cleanly(tmp_path: Path) -> None:
    result = invoke("doctor", "--kubectl", str(tmp_path / "none"))
    assert result.exit_code == 1 and "[FAIL] kubectl" in result.stdout


def test_role_yaml_grants_exactly_the_verbs_the_library_uses() -> None:
    import yaml

    role, binding = list(yaml.safe_load_all(cli.role_yaml("ns1")))
    rules = {tuple(r["resources"]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        ("pods",): {"create", "get", "list", "watch", "delete"},
        ("pods/exec",): {"create", "get"},
    }
    assert role["metadata"]["namespace"] == "ns1" and binding["roleRef"]["name"] == role["metadata"]["name"]
    needed = {(v, r + ("/" + s if s else "")) for v, r, s, _ in cli_doctor.REQUIRED_ACCESS}
    granted = {(v, res) for (res,), verbs in rules.items() for v in verbs}
    assert needed == granted


def test_main_is_the_console_script(mocker: MockerFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0


# -- cp and call on the executor's file and tool methods ----------------------------------------


@pytest.fixture
def box(wired: FakeRunner) -> FakeRunner:
    wired.pods["box"] = ours("box", long_lived=True)
    return wired


@pytest.mark.parametrize(
    ("remote", "method", "expected"),
    [
        ("in/data.csv", "upload_from_disk", {"remote_prefix": "in"}),  # same name: streamed from disk
        ("in/", "upload_from_disk", {"remote_prefix": "in"}),
        ("", "upload_from_disk", {"remote_prefix": ""}),
        ("in/renamed.csv", "upload_file_content", None),
    ],
)
def test_cp_upload_places_a_file(
    box: FakeRunner,
    mocker: MockerFixture,
    tmp_path: Path,
    remote: str,
    method: str,
    expected: dict[str, str] | None,
) -> None:
    local = tmp_path / "data.csv"
    local.write_bytes(b"a,b\n")
    mocks = {
        name: mocker.patch.object(KubernetesCommandLineCodeExecutor, name, return_value=["/workspace/x"])
        for name in ("upload_from_disk", "upload_file_content")
    }
    mocks["upload_file_content"].return_value = "/workspace/in/renamed.csv"
    result = invoke("cp", str(local), f"box:{remote}", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["direction"] == "upload"
    called = mocks[method]
    assert called.call_count == 1
    if expected is None:
        assert called.call_args.args == (remote, b"a,b\n")
    else:
        assert called.call_args.args == (local,) and called.call_args.kwargs == expected
    assert box.runs_of("delete") == []  # an attached pod is never deleted


def test_cp_upload_of_a_directory_keeps_its_content_under_the_remote_path(
    box: FakeRunner, mocker: MockerFixture, tmp_path: Path
) -> None:
    upload = mocker.patch.object(KubernetesCommandLineCodeExecutor, "upload_from_disk", return_value=[])
    assert invoke("cp", str(tmp_path), "box:pkg/").exit_code == 0
    assert upload.call_args.args == (tmp_path,) and upload.call_args.kwargs == {"remote_prefix": "pkg"}


def test_cp_upload_of_a_missing_file_is_a_usage_error(box: FakeRunner, tmp_path: Path) -> None:
    result = invoke("cp", str(tmp_path / "nope"), "box:x")
    assert result.exit_code == 2 and "no such file" in result.stderr
    assert box.runs == []


def test_cp_download_a_file_into_an_existing_directory(
    box: FakeRunner, mocker: MockerFixture, tmp_path: Path
) -> None:
    download = mocker.patch.object(
        KubernetesCommandLineCodeExecutor, "download_file", return_value=tmp_path / "report.txt"
    )
    result = invoke("cp", "box:out/report.txt", str(tmp_path))
    assert result.exit_code == 0 and result.stdout == f"{tmp_path / 'report.txt'}\n"
    assert download.call_args.args == ("out/report.txt", tmp_path / "report.txt")


def test_cp_download_falls_back_to_a_directory(
    box: FakeRunner, mocker: MockerFixture, tmp_path: Path
) -> None:
    mocker.patch.object(
        KubernetesCommandLineCodeExecutor,
        "download_file",
        side_effect=TransferError("download of 'out' from pod box failed: out is not a regular file"),
    )
    download_dir = mocker.patch.object(KubernetesCommandLineCodeExecutor, "download_dir", return_value=[])
    (tmp_path / "existing").write_text("x")
    assert invoke("cp", "box:out", str(tmp_path)).exit_code == 0
    assert download_dir.call_args.args == ("out", tmp_path / "out")  # a non-empty dir receives it by name


def test_cp_download_errors_are_tool_errors(box: FakeRunner, mocker: MockerFixture, tmp_path: Path) -> None:
    mocker.patch.object(
        KubernetesCommandLineCodeExecutor,
        "download_file",
        side_effect=TransferError("checksums differ between client and pod"),
    )
    download_dir = mocker.patch.object(KubernetesCommandLineCodeExecutor, "download_dir")
    result = invoke("cp", "box:f.txt", str(tmp_path / "f.txt"))
    assert result.exit_code == 125 and "checksums differ" in result.stderr
    download_dir.assert_not_called()


def test_call_uploads_installs_the_runner_and_calls(
    wired: FakeRunner, mocker: MockerFixture, tmp_path: Path
) -> None:
    from kubectl_executor.boundary import CommandLineCodeResult

    module = tmp_path / "tools.py"
    module.write_text("def add(a, b):\n    return a + b\n")
    package = tmp_path / "helpers"
    package.mkdir()
    upload = mocker.patch.object(KubernetesCommandLineCodeExecutor, "upload_from_disk", return_value=[])
    install = mocker.patch.object(KubernetesCommandLineCodeExecutor, "install_pod_dispatcher")
    call = mocker.patch.object(
        KubernetesCommandLineCodeExecutor,
        "execute_tool_function",
        return_value=CommandLineCodeResult(exit_code=0, output="3\n", stdout="3\n"),
    )
    args = [
        "call",
        "tools:add",
        "--args",
        '{"a": 1, "b": 2}',
        "--upload",
        str(module),
        "--upload",
        str(package),
    ]
    result = invoke(*args, "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stdout"] == "3\n"
    assert [c.kwargs["remote_prefix"] for c in upload.call_args_list] == ["", "helpers"]
    assert install.call_args.kwargs == {"default_module": "tools", "runner_filename": TOOL_RUNNER_FILE}
    assert call.call_args.args == ({"a": 1, "b": 2}, "add")
    assert call.call_args.kwargs["module"] == "tools"
    assert call.call_args.kwargs["runner_script"] == TOOL_RUNNER_FILE
    assert wired.pods == {}  # the pod of the call is gone


def test_call_exit_code_is_the_functions(wired: FakeRunner, mocker: MockerFixture) -> None:
    from kubectl_executor.boundary import CommandLineCodeResult

    mocker.patch.object(KubernetesCommandLineCodeExecutor, "install_pod_dispatcher")
    mocker.patch.object(
        KubernetesCommandLineCodeExecutor,
        "execute_tool_function",
        return_value=CommandLineCodeResult(
            exit_code=1, output="TypeError: boom\n", stderr="TypeError: boom\n"
        ),
    )
    result = invoke("call", "pkg.mod:fn")
    assert result.exit_code == 1 and "TypeError: boom" in result.stderr


# -- a missing optional extra ------------------------------------------------------------------------


@pytest.mark.parametrize("blocked", ["mcp", "anyio"])
def test_mcp_without_its_extra_prints_one_line_and_exits_2(blocked: str) -> None:
    """A process in which the SDK cannot be imported (as on the base install): no traceback."""
    code = (
        f"import sys\nsys.modules[{blocked!r}] = None\nfrom kubectl_executor.cli import main\nmain(['mcp'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("kubectl-executor: error: this command needs the optional extra [mcp]")
    assert done.stderr.rstrip().endswith("pip install 'kubectl-executor[mcp]'")
    assert f"({blocked} is not installed)" in done.stderr
