"""executor.py on the fake kubectl runner: argv, stdin, outcomes from the marker, retries, lifecycle."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kx_fakes import (
    ExecReply,
    FakeRunner,
    ParsedRequest,
    exit_marker,
    parse_request,
    pod_json,
    reply_with,
    runner_stdout,
    start_marker,
)

from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor
from kubectl_executor._cluster.labels import MANAGED_BY, MANAGED_BY_LABEL, OWNER_ID_LABEL, SPEC_LABEL
from kubectl_executor._cluster.manifest import spec_hash
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._exec.protocol import LAUNCH, LOADER, RICH_ENV, RUN_SCRIPT, RichLimits
from kubectl_executor.errors import (
    ForbiddenError,
    InvalidInputError,
    KubectlError,
    OutcomeUnknownError,
    PodStartError,
    TransientError,
)
from kubectl_executor.executor import BASHRC_BEGIN

Make = Callable[..., KubernetesCommandLineCodeExecutor]

DIAL_BACKEND = (
    b"Error from server: error dialing backend: dial tcp 10.0.0.5:10250: connect: connection refused\n"
)


@pytest.fixture
def make(make_executor: Make) -> Make:
    return make_executor


def not_started(stderr: bytes = DIAL_BACKEND) -> Callable[[ParsedRequest], ExecReply]:
    """kubectl could not open the exec stream: nothing printed, the code never reached the pod."""
    return lambda req: ExecReply(b"", stderr=stderr, returncode=1, ran=False)


# -- argv and stdin -------------------------------------------------------------------------------------------


def test_exec_argv_is_fixed_and_code_travels_on_stdin(make: Make, fake_runner: FakeRunner) -> None:
    code = "# $HOME `id` $(rm -rf /)\nprint('SECRET-CODE-TEXT')\nEOF\n"
    ex = make(pod_name="kx-fixed", namespace="team-a")
    fake_runner.exec_replies.append(reply_with(b"SECRET-CODE-TEXT\n"))
    result = ex.execute_code_blocks([CodeBlock(code=code, language="python")])
    assert result.exit_code == 0
    (proc,) = fake_runner.execs()
    assert proc.argv == [
        ex.kubectl.path,
        "--namespace=team-a",
        "exec",
        "-i",
        "kx-fixed",
        "-c",
        "executor",
        "--",
        "sh",
        "-c",
        LAUNCH,
        "kx",
        parse_request(bytes(proc.stdin)).nonce,
        LOADER,
        RUN_SCRIPT,
    ]
    for argv in fake_runner.all_argvs():
        for arg in argv:
            assert "SECRET-CODE-TEXT" not in arg
    request = parse_request(bytes(proc.stdin))
    assert request.code == code.encode()
    assert request.runner == "python"
    assert request.work_dir == "/workspace"
    assert request.path == f"tmp_code_{hashlib.md5(code.encode()).hexdigest()}.python"  # the seed's name
    assert request.timeout == "60"
    assert proc.stdin_closed.is_set()


def test_manifest_travels_on_stdin_with_env_and_labels(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(env_vars=[{"key": "API_URL", "value": "http://svc"}], image="python:3.12-slim")
    (apply,) = fake_runner.runs_of("apply")
    assert apply.args == ["apply", "-f", "-", "-o", "json"]
    assert apply.stdin is not None
    manifest = json.loads(apply.stdin)
    assert manifest["metadata"]["name"] == ex.pod_name
    labels = manifest["metadata"]["labels"]
    assert labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert labels[OWNER_ID_LABEL] == ex.owner_id
    assert {"name": "API_URL", "value": "http://svc"} in manifest["spec"]["containers"][0]["env"]
    assert manifest["spec"]["containers"][0]["image"] == "python:3.12-slim"
    # then the watch, on the same pod
    watch = [p for p in fake_runner.spawns if "--watch" in p.args]
    assert watch and watch[0].args[:3] == ["get", "pod", ex.pod_name]
    assert watch[0].killed


def test_session_id_is_a_deprecated_alias_of_owner_id(make: Make) -> None:
    ex = make()
    with pytest.warns(DeprecationWarning, match="use owner_id"):
        assert ex.session_id == ex.owner_id


def test_pod_name_and_namespace_validated(make: Make, fake_runner: FakeRunner) -> None:
    with pytest.raises(InvalidInputError):
        make(pod_name="Bad_Name")
    with pytest.raises(InvalidInputError):
        make(namespace="Team A")
    assert fake_runner.runs == [] and fake_runner.spawns == []


def test_cluster_access_is_one_model_the_facades_take(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy
) -> None:
    """``access=`` is the same cluster access as the separate keywords, which map onto it; both
    forms at once are refused."""
    from kubectl_executor import ClusterAccess, WorkspaceVolume
    from kubectl_executor.pool import WarmPool

    access = ClusterAccess(kubectl=fake_kubectl, namespace="team", context="ctx")
    seed = KubernetesCommandLineCodeExecutor(
        kubectl=fake_kubectl, namespace="team", context="ctx", runner=fake_runner, start=False
    )
    one = KubernetesCommandLineCodeExecutor(access=access, runner=fake_runner, start=False)
    assert one.kubectl.access == seed.kubectl.access == access
    assert one.kubectl.flags == seed.kubectl.flags and one.namespace == "team"
    with pytest.raises(InvalidInputError, match="not both"):
        KubernetesCommandLineCodeExecutor(access=access, namespace="other", runner=fake_runner, start=False)
    with pytest.raises(InvalidInputError):
        KubernetesCommandLineCodeExecutor(access=ClusterAccess(namespace="Team A"), start=False)
    pool = WarmPool(0, access=access, runner=fake_runner, retry=retry_policy, start=False)
    assert pool.kubectl.access == access and pool.namespace == "team"
    ws = WorkspaceVolume("ws1", access=access, runner=fake_runner, retry=retry_policy, start=False)
    assert ws.kubectl.access == access and ws.namespace == "team"
    for executor in (seed, one):
        executor.stop()
    pool.stop()
    ws.stop()
    assert fake_runner.spawns == []


# -- outcomes from the marker ----------------------------------------------------------------------------------


def test_exit_code_and_output_come_from_the_marker(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.exec_replies.append(reply_with(b"hello\n", 3, stderr=b"Traceback: boom\n"))
    result = ex.execute_code_blocks([CodeBlock("import sys; print('hello'); sys.exit(3)", "python")])
    assert result.exit_code == 3
    assert result.stdout == "hello\n"
    assert result.stderr == "Traceback: boom\n"
    assert result.output == "hello\nTraceback: boom\n"
    assert "__KX_" not in result.output
    assert result.code_file is not None and result.code_file.startswith("/workspace/tmp_code_")
    assert not result.timed_out


def test_marker_split_over_many_chunks(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()

    def chunked(req: ParsedRequest) -> ExecReply:
        data = runner_stdout(req.nonce, b"one\ntwo", 4)
        return ExecReply([data[i : i + 3] for i in range(0, len(data), 3)])

    fake_runner.exec_replies.append(chunked)
    result = ex.execute_code_blocks([CodeBlock("x", "python")])
    assert (result.exit_code, result.stdout) == (4, "one\ntwo")


def test_kubectl_exit_code_does_not_override_the_marker(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.exec_replies.append(
        lambda req: ExecReply(
            runner_stdout(req.nonce, b"Error from server (NotFound): printed by the user\n", 0),
            stderr=b"command terminated with exit code 7\n",
            returncode=1,
        )
    )
    result = ex.execute_code_blocks([CodeBlock("print('Error from server ...')", "python")])
    assert result.exit_code == 0


def test_no_marker_and_exit_0_is_outcome_unknown_and_not_rerun(
    make: Make, fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    ex = make()
    fake_runner.exec_replies.append(lambda req: ExecReply(b"partial output", returncode=0))
    with pytest.raises(OutcomeUnknownError) as info:
        ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert len(fake_runner.execs()) == 1
    assert sleeps == []
    assert info.value.stdout == b"partial output"
    assert ex.pod_name in str(info.value)


def test_stream_cut_after_start_is_outcome_unknown_even_with_kubectl_error(
    make: Make, fake_runner: FakeRunner
) -> None:
    ex = make()
    fake_runner.exec_replies.append(
        lambda req: ExecReply(start_marker(req.nonce) + b"half", stderr=DIAL_BACKEND, returncode=1)
    )
    with pytest.raises(OutcomeUnknownError):
        ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert len(fake_runner.execs()) == 1


def test_exec_not_started_is_retried_and_the_block_runs_once(
    make: Make, fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    ex = make()
    fake_runner.exec_replies.extend([not_started(), not_started(), reply_with(b"ran\n", 0)])
    result = ex.execute_code_blocks([CodeBlock("print('ran')", "python")])
    assert result.exit_code == 0
    assert result.output == "ran\n"
    assert len(fake_runner.execs()) == 3
    assert len(fake_runner.ran_blocks) == 1
    assert len(sleeps) == 2
    # Every attempt carried the same, complete code.
    requests = [parse_request(bytes(p.stdin)) for p in fake_runner.execs()]
    assert [r.code for r in requests] == [b"print('ran')"] * 3


def test_exec_not_started_gives_up_at_the_bound(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.default_exec = not_started(
        b'error: unable to upgrade connection: container not found ("executor")\n'
    )
    with pytest.raises(TransientError):
        ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert len(fake_runner.execs()) == 4
    assert fake_runner.ran_blocks == []


def test_forbidden_exec_is_typed_and_not_retried(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    stderr = (
        b'Error from server (Forbidden): pods "kx-1" is forbidden: User "system:serviceaccount:ns:sa" '
        b'cannot create resource "pods/exec" in API group "" in the namespace "ns"\n'
    )
    fake_runner.default_exec = not_started(stderr)
    with pytest.raises(ForbiddenError) as info:
        ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert info.value.resource == "pods/exec"
    assert len(fake_runner.execs()) == 1


# -- several blocks --------------------------------------------------------------------------------------------


def test_stops_at_first_failure(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.exec_replies.extend([reply_with(b"a\n", 0), reply_with(b"b\n", 2), reply_with(b"c\n", 0)])
    blocks = [
        CodeBlock("print('a')", "python"),
        CodeBlock("echo b; exit 2", "sh"),
        CodeBlock("print('c')", "python"),
    ]
    result = ex.execute_code_blocks(blocks)
    assert result.exit_code == 2
    assert result.output == "a\nb\n"
    assert len(fake_runner.execs()) == 2
    assert [r.runner for r in fake_runner.ran_blocks] == ["python", "sh"]
    # code_file is the first block's file
    assert result.code_file == f"/workspace/{fake_runner.ran_blocks[0].path}"


def test_unknown_language_is_exit_1_without_exec(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    result = ex.execute_code_blocks([CodeBlock("puts 1", "ruby")])
    assert result.exit_code == 1
    assert "ruby" in result.output and "nsupported" in result.output
    assert fake_runner.execs() == []


def test_unknown_language_after_a_good_block(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.exec_replies.append(reply_with(b"first\n", 0))
    result = ex.execute_code_blocks([CodeBlock("print(1)", "python"), CodeBlock("x", "cobol")])
    assert result.exit_code == 1
    assert result.output.startswith("first\n")
    assert len(fake_runner.execs()) == 1


def test_save_only_language(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    html = "<!-- filename: site/index.html -->\n<p>hi</p>\n"
    result = ex.execute_code_blocks([CodeBlock(html, "html")])
    assert result.exit_code == 0
    assert result.output == "Code saved to /workspace/site/index.html\n"
    assert result.code_file == "/workspace/site/index.html"
    (request,) = fake_runner.ran_blocks
    assert (request.runner, request.path, request.code) == ("none", "site/index.html", html.encode())


def test_execution_policy_false_saves_only(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(execution_policies={"python": False})
    result = ex.execute_code_blocks([CodeBlock("print(1)", "Python")])
    assert result.output.startswith("Code saved to /workspace/tmp_code_")
    assert fake_runner.ran_blocks[0].runner == "none"


def test_language_aliases_pick_the_runner(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    ex.execute_code_blocks([CodeBlock("echo 1", "SHELL"), CodeBlock("echo 2", "Bash"), CodeBlock("1", "py")])
    assert [r.runner for r in fake_runner.ran_blocks] == ["sh", "bash", "python"]
    # the seed's extension: its language name after its alias map ("py" -> "python")
    assert [r.path.rsplit(".", 1)[1] for r in fake_runner.ran_blocks] == ["shell", "bash", "python"]


def test_escaping_filename_hint_is_refused_without_exec(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    result = ex.execute_code_blocks([CodeBlock("# filename: ../../etc/x.py\nprint(1)", "python")])
    assert result.exit_code == 1
    assert "../../etc/x.py" in result.output
    assert fake_runner.execs() == []


def test_pip_install_is_quietened_in_shell_blocks(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    ex.execute_code_blocks([CodeBlock("pip install numpy", "sh")])
    assert fake_runner.ran_blocks[0].code == b"pip install -qqq numpy"


# -- timeouts ----------------------------------------------------------------------------------------------------


def test_in_pod_timeout_is_124_with_note(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(timeout=5)
    fake_runner.exec_replies.append(reply_with(b"working...\n", 124, timed_out=1))
    result = ex.execute_code_blocks(
        [CodeBlock("while True: pass", "python"), CodeBlock("print(2)", "python")]
    )
    assert result.exit_code == 124
    assert result.timed_out
    assert "Timeout" in result.output and "5s" in result.output
    assert result.output.startswith("working...\n")
    assert len(fake_runner.execs()) == 1
    assert fake_runner.ran_blocks[0].timeout == "5"


def test_program_exiting_124_itself_is_not_a_timeout(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.exec_replies.append(reply_with(b"", 124, timed_out=0))
    result = ex.execute_code_blocks([CodeBlock("exit 124", "sh")])
    assert result.exit_code == 124
    assert not result.timed_out
    assert "Timeout" not in result.output


def test_client_deadline_kills_kubectl_and_the_run_in_the_pod(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(timeout=2)
    fake_runner.exec_replies.append(lambda req: ExecReply(start_marker(req.nonce) + b"stuck", hang=True))
    result = ex.execute_code_blocks([CodeBlock("import time; time.sleep(1e9)", "python")])
    assert result.exit_code == 124
    assert result.timed_out
    (proc,) = fake_runner.execs()
    assert proc.killed
    # kubectl was given the in-pod deadline plus a margin, not forever
    assert proc.wait_timeouts and proc.wait_timeouts[0] is not None and 2 < proc.wait_timeouts[0] < 120
    nonce = fake_runner.ran_blocks[0].nonce
    kills = [c for c in fake_runner.runs_of("exec") if c.argv[-2:] == [nonce, ex.work_dir.as_posix()]]
    assert len(kills) == 1
    assert kills[0].args[1] == ex.pod_name


@pytest.mark.parametrize("timeout", [0, 0.5, -1])
def test_timeout_below_one_second_is_refused(make: Make, fake_runner: FakeRunner, timeout: float) -> None:
    with pytest.raises(InvalidInputError, match="timeout"):
        make(timeout=timeout)
    assert fake_runner.runs == []


# -- output ---------------------------------------------------------------------------------------------------


def test_output_over_budget_is_truncated_with_a_pointer(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(max_output_bytes=2048)
    fake_runner.exec_replies.append(reply_with(b"H" * 1024 + b"M" * 50_000 + b"T" * 1024, 0))
    result = ex.execute_code_blocks([CodeBlock("print('x' * 52000)", "python")])
    assert result.truncated
    assert result.stdout.startswith("H" * 1024)
    assert result.stdout.endswith("T" * 1024)
    assert "50000 bytes omitted" in result.stdout
    assert "/tmp/kx-logs/" in result.stdout


def test_log_files_reported_when_kept(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    fake_runner.exec_replies.append(
        lambda req: ExecReply(start_marker(req.nonce) + b"x" + exit_marker(req.nonce, 0, 0, 1))
    )
    result = ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    nonce = fake_runner.ran_blocks[0].nonce
    assert result.log_files == [f"/tmp/kx-logs/{nonce}.out", f"/tmp/kx-logs/{nonce}.err"]


def test_on_output_callback_streams_chunks(make: Make, fake_runner: FakeRunner) -> None:
    seen: list[tuple[str, bytes]] = []
    ex = make(on_output=lambda stream, chunk: seen.append((stream, chunk)))
    fake_runner.exec_replies.append(reply_with(b"out-text", 0, stderr=b"err-text"))
    ex.execute_code_blocks([CodeBlock("x", "python")])
    assert b"".join(c for s, c in seen if s == "stdout") == b"out-text"
    assert b"".join(c for s, c in seen if s == "stderr") == b"err-text"


# -- lifecycle -------------------------------------------------------------------------------------------------


def test_stop_deletes_the_pod_and_is_idempotent(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    name = ex.pod_name
    assert name in fake_runner.pods
    ex.stop()
    ex.stop()
    deletes = fake_runner.runs_of("delete")
    assert len(deletes) == 1
    assert deletes[0].args[:3] == ["delete", "pod", name]
    assert "--ignore-not-found" in deletes[0].args
    assert name not in fake_runner.pods


def test_context_manager_stops(make: Make, fake_runner: FakeRunner) -> None:
    with make() as ex:
        name = ex.pod_name
    assert [d.args[2] for d in fake_runner.runs_of("delete")] == [name]


def test_keep_pod_leaves_it(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(keep_pod=True)
    ex.stop()
    assert fake_runner.runs_of("delete") == []


def test_start_false_defers_creation(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(start=False)
    assert fake_runner.runs == []
    fake_runner.exec_replies.append(reply_with(b"ok", 0))
    assert ex.execute_code_blocks([CodeBlock("1", "python")]).exit_code == 0
    assert len(fake_runner.runs_of("apply")) == 1


def test_start_failure_deletes_the_pod(make: Make, fake_runner: FakeRunner) -> None:
    fake_runner.watch_pod = pod_json(
        "ignored",
        phase="Pending",
        ready=False,
        waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:latest"'},
    )
    with pytest.raises(PodStartError) as info:
        make(image="nope:latest", pod_name="kx-broken")
    assert info.value.reason == "ImagePullBackOff"
    assert "nope:latest" in str(info.value)
    deletes = fake_runner.runs_of("delete")
    assert [d.args[2] for d in deletes] == ["kx-broken"]


def test_apply_failure_deletes_and_raises_typed(make: Make, fake_runner: FakeRunner) -> None:
    from kubectl_executor._cluster.runner import Completed

    def forbid(call: Any) -> Completed | None:
        if call.args[:1] == ["apply"]:
            stderr = (
                b'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:ns:sa" '
                b'cannot create resource "pods" in API group "" in the namespace "ns"\n'
            )
            return Completed(tuple(call.argv), 1, b"", stderr)
        return None

    fake_runner.on_run = forbid
    with pytest.raises(ForbiddenError) as info:
        make(pod_name="kx-denied")
    assert (info.value.verb, info.value.resource) == ("create", "pods")
    assert [d.args[2] for d in fake_runner.runs_of("delete")] == ["kx-denied"]


def test_restart_recreates_with_a_new_name(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    first = ex.pod_name
    ex.restart()
    assert ex.pod_name != first
    assert [d.args[2] for d in fake_runner.runs_of("delete")] == [first]
    assert len(fake_runner.runs_of("apply")) == 2


# -- shared_resources ---------------------------------------------------------------------------------------------


def _ours(name: str, image: str, work_dir: str, *, ready: bool = True) -> dict[str, Any]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY, SPEC_LABEL: spec_hash(image, work_dir)}
    return pod_json(name, image=image, work_dir=work_dir, labels=labels, ready=ready)


def test_shared_resources_reuses_only_our_matching_ready_pod(make: Make, fake_runner: FakeRunner) -> None:
    image, work_dir = "python:3-slim", "/workspace"
    fake_runner.pods.update(
        {
            # Same image but not made by this library: never reused (the seed's defect).
            "someone-elses": pod_json("someone-elses", image=image, work_dir=work_dir, labels={"app": "web"}),
            "ours-other-image": _ours("ours-other-image", "python:3.11", work_dir),
            "ours-other-dir": _ours("ours-other-dir", image, "/other"),
            "ours-not-ready": _ours("ours-not-ready", image, work_dir, ready=False),
            "ours-match": _ours("ours-match", image, work_dir),
        }
    )
    ex = make(shared_resources=True, image=image, work_dir=work_dir, env_vars=[{"key": "K", "value": "v 1"}])
    assert ex.pod_name == "ours-match"
    assert fake_runner.runs_of("apply") == []
    (listing,) = [c for c in fake_runner.runs if c.args[:2] == ["get", "pods"]]
    assert f"{MANAGED_BY_LABEL}={MANAGED_BY}" in listing.args[3]
    # The reused pod's container env is not ours: env travels with each run.
    ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert fake_runner.ran_blocks[0].env == {"K": "v 1", RICH_ENV: RichLimits().env_value()}
    assert fake_runner.execs()[0].args[2] == "ours-match"
    # And stop() leaves a pod we did not create.
    ex.stop()
    assert fake_runner.runs_of("delete") == []


def test_shared_resources_ignores_same_hash_with_other_annotations(
    make: Make, fake_runner: FakeRunner
) -> None:
    impostor = _ours("impostor", "python:3-slim", "/workspace")
    impostor["metadata"]["annotations"] = {}
    fake_runner.pods["impostor"] = impostor
    ex = make(shared_resources=True)
    assert ex.pod_name != "impostor"
    assert len(fake_runner.runs_of("apply")) == 1


def test_shared_resources_creates_when_nothing_matches(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(shared_resources=True)
    assert len(fake_runner.runs_of("apply")) == 1
    ex.stop()
    assert len(fake_runner.runs_of("delete")) == 1


# -- env vars ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_vars",
    [
        [{"key": "A"}],
        [{"name": "A", "value": "1"}],
        [{"key": "1A", "value": "x"}],
        [{"key": "A-B", "value": "x"}],
        [{"key": "A", "value": "two\nlines"}],
        ["A=1"],
    ],
)
def test_malformed_env_vars_are_refused(make: Make, fake_runner: FakeRunner, env_vars: list[Any]) -> None:
    with pytest.raises(InvalidInputError):
        make(env_vars=env_vars)
    assert fake_runner.runs == []


def test_add_env_vars_to_bashrc_quotes_and_uses_stdin(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    danger = "$(rm -rf /) `reboot` ; echo 'pwned'"
    ex.add_env_vars_to_bashrc([{"key": "DANGER", "value": danger}])
    (call,) = [c for c in fake_runner.runs_of("exec") if "-i" in c.args]
    for arg in call.argv:
        assert "rm -rf" not in arg and "DANGER" not in arg
    assert call.stdin is not None
    assert BASHRC_BEGIN.encode() in call.stdin
    # Later runs get the variable too.
    ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert fake_runner.ran_blocks[0].env["DANGER"] == danger


def test_add_env_vars_to_bashrc_for_real_with_local_sh(
    make: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    """Run the fixed bashrc script with the host's sh (not kubectl): values stay literal, blocks don't pile up."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# user's own line\nalias ll='ls -l'\n")
    ex = make()
    fake_runner.exec_locally = True
    fake_runner.local_home = home
    danger = "$(touch " + str(tmp_path / "pwned") + ") `id` 'q' \"dq\""
    ex.add_env_vars_to_bashrc({"DANGER": danger, "PLAIN": "a b"})
    ex.add_env_vars_to_bashrc([{"key": "PLAIN", "value": "changed"}])
    text = (home / ".bashrc").read_text()
    assert text.count(BASHRC_BEGIN) == 1
    assert "alias ll='ls -l'" in text
    shown = subprocess.run(
        ["sh", "-c", '. "$HOME/.bashrc" 2>/dev/null; printf "%s|%s" "$DANGER" "$PLAIN"'],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    assert shown.stdout.decode() == f"{danger}|changed"
    assert not (tmp_path / "pwned").exists()


def test_add_env_vars_to_bashrc_validates(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    with pytest.raises(InvalidInputError):
        ex.add_env_vars_to_bashrc({"BAD NAME": "x"})
    with pytest.raises(InvalidInputError):
        ex.add_env_vars_to_bashrc({"OK": "line\nbreak"})
    assert fake_runner.runs_of("exec") == []


# -- the real in-pod runner behind the fake kubectl ----------------------------------------------------------------


def test_blocks_through_the_real_run_sh(make: Make, fake_runner: FakeRunner, tmp_path: Path) -> None:
    """The fake kubectl hands the exec to the host's sh: the protocol's two halves agree."""
    work = tmp_path / "ws"
    work.mkdir()
    ex = make(work_dir=str(work))
    fake_runner.exec_locally = True
    result = ex.execute_code_blocks(
        [
            CodeBlock("# filename: pkg/hello.py\nimport sys\nprint('hi', end='')\n", "python"),
            CodeBlock("echo err >&2\nexit 3\n", "sh"),
            CodeBlock("print('never')", "python"),
        ]
    )
    assert result.exit_code == 3
    assert result.stdout == "hi"
    assert result.stderr == "err\n"
    assert result.code_file == f"{work}/pkg/hello.py"
    assert (work / "pkg" / "hello.py").read_text().startswith("# filename: pkg/hello.py")


def test_timeout_through_the_real_run_sh(make: Make, fake_runner: FakeRunner, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    work.mkdir()
    ex = make(work_dir=str(work), timeout=1)
    fake_runner.exec_locally = True
    result = ex.execute_code_blocks(
        [CodeBlock("import time\nprint('start', flush=True)\ntime.sleep(60)\n", "python")]
    )
    assert result.exit_code == 124
    assert result.timed_out
    assert result.stdout == "start\n"


def test_client_deadline_before_start_marker_is_outcome_unknown(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(timeout=2)
    fake_runner.exec_replies.append(lambda req: ExecReply(b"", hang=True))
    with pytest.raises(OutcomeUnknownError):
        ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    nonce = fake_runner.ran_blocks[0].nonce
    assert [c for c in fake_runner.runs_of("exec") if c.argv[-2:] == [nonce, ex.work_dir.as_posix()]]


def test_no_signal_handler_is_installed(make: Make) -> None:
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ex = make()
    ex.stop()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_resource_usage_is_this_pods(make: Make, fake_runner: FakeRunner) -> None:
    from kubectl_executor._cluster.runner import Completed

    ex = make(namespace="team-a")
    metrics = {"containers": [{"name": "executor", "usage": {"cpu": "12m", "memory": "40Mi"}}]}
    fake_runner.on_run = lambda call: (
        Completed(tuple(call.argv), 0, json.dumps(metrics).encode()) if "--raw" in call.args else None
    )
    assert ex.get_pod_resource_usage() == {"executor": {"cpu": "12m", "memory": "40Mi"}}  # the seed's shape
    (raw,) = [c for c in fake_runner.runs if "--raw" in c.args]
    assert raw.args[2] == f"/apis/metrics.k8s.io/v1beta1/namespaces/team-a/pods/{ex.pod_name}"


def test_resource_usage_none_without_metrics_api(make: Make, fake_runner: FakeRunner) -> None:
    from kubectl_executor._cluster.runner import Completed

    ex = make(namespace="team-a")
    fake_runner.on_run = lambda call: (
        Completed(
            tuple(call.argv),
            1,
            b"",
            b"Error from server (NotFound): the server could not find the requested resource\n",
        )
        if "--raw" in call.args
        else None
    )
    assert ex.get_pod_resource_usage() is None


def test_is_pod_running_with_image(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(image="python:3.12-slim")
    assert ex.is_pod_running_with_image() == ex.pod_name
    fake_runner.pods[ex.pod_name]["status"]["phase"] = "Failed"
    assert ex.is_pod_running_with_image() is None


def test_a_pod_being_deleted_is_not_running_with_image(make: Make, fake_runner: FakeRunner) -> None:
    # A real cluster keeps the phase Running until the kubelet has stopped the container.
    ex = make(image="python:3.12-slim")
    fake_runner.pods[ex.pod_name]["metadata"]["deletionTimestamp"] = "2026-12-03T09:00:00Z"
    assert fake_runner.pods[ex.pod_name]["status"]["phase"] == "Running"
    assert ex.is_pod_running_with_image() is None


def test_properties(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(timeout=30, work_dir="/data", image="python:3.12-slim", execution_policies={"html": True})
    assert ex.timeout == 30
    assert ex.work_dir == Path("/data")
    assert ex.image == "python:3.12-slim"
    assert ex.namespace == "default"  # from the pod, as kubectl's current namespace chose
    assert ex.execution_policies["html"] is True and ex.execution_policies["python"] is True
    assert ex.code_extractor.extract_code_blocks("```py\n1\n```")[0].language == "py"


def test_bearer_token_mode_end_to_end(make: Make, fake_runner: FakeRunner) -> None:
    token = "tok-very-secret-123"
    ex = make(remote_control_plane="https://api.example.test:6443", kube_token=token, namespace="ns")
    path = ex.kubectl.kubeconfig_path
    assert path is not None and Path(path).exists()
    ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    ex.stop()
    for argv in fake_runner.all_argvs():
        assert not any(token in arg for arg in argv)
        assert f"--kubeconfig={path}" in argv
    assert not any(token.encode() in (c.stdin or b"") for c in fake_runner.runs)
    assert not Path(path).exists()


# -- the seed's observable details -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "language"),
    [("python", "python"), ("python", "py"), ("py", "python"), ("py", "py"), ("Python", "PY"),
     ("sh", "sh"), ("shell", "shell"), ("shell", "sh"), ("sh", "shell"), ("bash", "bash"),
     ("pwsh", "pwsh"), ("powershell", "pwsh"), ("ps1", "powershell")],
)  # fmt: skip
def test_a_mutated_policy_takes_effect_on_the_next_block(
    make: Make, fake_runner: FakeRunner, key: str, language: str
) -> None:
    ex = make()
    fake_runner.exec_replies.append(reply_with(b"ran\n", 0))
    first = ex.execute_code_blocks([CodeBlock("echo ran", language)])
    assert first.output == "ran\n" and fake_runner.ran_blocks[0].runner != "none"
    ex.execution_policies[key] = False  # the seed README's example 2
    saved = ex.execute_code_blocks([CodeBlock("echo ran", language)])
    assert saved.output == f"Code saved to {saved.code_file}\n"
    assert fake_runner.ran_blocks[1].runner == "none"  # written, not run
    ex.execution_policies[key] = True
    fake_runner.exec_replies.append(reply_with(b"ran\n", 0))
    again = ex.execute_code_blocks([CodeBlock("echo ran", language)])
    assert again.output == "ran\n" and fake_runner.ran_blocks[2].runner != "none"


def test_execution_policies_is_the_same_mapping_and_assignable(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    assert ex.execution_policies is ex.execution_policies
    mine = {"sh": True}
    ex.execution_policies = mine  # the seed's is a plain attribute: the caller's dict stays live
    mine["sh"] = False
    result = ex.execute_code_blocks([CodeBlock("echo no", "sh"), CodeBlock("print(1)", "python")])
    # sh: False; python: no key at all, which the seed treats as "save only"
    assert [r.runner for r in fake_runner.ran_blocks] == ["none", "none"]
    assert result.output.count("Code saved to ") == 2
    with pytest.raises(InvalidInputError):
        ex.execution_policies = [("sh", True)]  # type: ignore[assignment]


def test_restart_keeps_the_mutated_policies(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    ex.execution_policies["python"] = False
    ex.restart()
    ex.execute_code_blocks([CodeBlock("print(1)", "python")])
    assert fake_runner.ran_blocks[-1].runner == "none"


@pytest.mark.parametrize(
    ("language", "extension"),
    [("python", "python"), ("py", "python"), ("sh", "sh"), ("shell", "shell"), ("bash", "bash"),
     ("js", "javascript"), ("html", "html")],
)  # fmt: skip
def test_code_file_and_saved_path_are_the_seeds_names(
    make: Make, fake_runner: FakeRunner, language: str, extension: str
) -> None:
    ex = make(execution_policies={"python": False, "sh": False, "shell": False, "bash": False})
    code = "pip install requests\n" if language in ("sh", "shell", "bash") else "x = 1\n"
    result = ex.execute_code_blocks([CodeBlock(code, language)])
    quiet = code.replace("pip install", "pip install -qqq")  # the md5 is of the quietened code
    path = f"/workspace/tmp_code_{hashlib.md5(quiet.encode()).hexdigest()}.{extension}"
    assert result.code_file == path
    assert result.output == f"Code saved to {path}\n"
    assert fake_runner.ran_blocks[0].path == path.removeprefix("/workspace/")
    assert fake_runner.ran_blocks[0].code == quiet.encode()


def test_unsupported_language_keeps_the_seeds_words(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    result = ex.execute_code_blocks([CodeBlock("puts 1", "Ruby")])
    assert result.exit_code == 1
    assert result.output.startswith("Unsupported language ruby (runs python, bash, sh, pwsh;")
    assert result.output.endswith("\n")


def test_escaping_file_name_keeps_the_seeds_words(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    result = ex.execute_code_blocks([CodeBlock("# filename: ../x.py\nprint(1)", "python")])
    assert result.exit_code == 1
    assert result.output.startswith("Filename is not in the workspace: ")
    assert "../x.py" in result.output
    assert fake_runner.execs() == []


def test_absolute_hint_inside_work_dir_is_used(make: Make, fake_runner: FakeRunner) -> None:
    ex = make(work_dir="/data")
    fake_runner.exec_replies.append(reply_with(b"", 0))
    result = ex.execute_code_blocks([CodeBlock("# filename: /data/pkg/../app.py\nprint(1)", "python")])
    assert result.code_file == "/data/app.py"
    assert fake_runner.ran_blocks[0].path == "app.py"


def test_no_blocks_is_the_seeds_value_error(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    with pytest.raises(ValueError, match=r"^No code blocks to execute\.$"):
        ex.execute_code_blocks([])
    assert fake_runner.execs() == []


def test_timeout_error_keeps_the_seeds_words(make: Make, fake_runner: FakeRunner) -> None:
    with pytest.raises(ValueError, match=r"^Timeout must be greater than or equal to 1\. "):
        make(timeout=0)


# -- bearer-token mode over https without a CA ------------------------------------------------------

TLS_STDERR = (
    b'E1202 10:00:00.000000 1 memcache.go:265] "Unhandled Error" err="couldn\'t get current server API '
    b'group list: Get \\"https://10.0.0.1:6443/api?timeout=32s\\": tls: failed to verify certificate: '
    b'x509: certificate signed by unknown authority"\n'
    b"Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by "
    b"unknown authority\n"
)


def test_certificate_failure_says_what_to_pass(
    make: Make, fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    from kubectl_executor._cluster.runner import Completed

    fake_runner.on_run = lambda call: Completed(call.argv, 1, b"", TLS_STDERR, False)
    with pytest.raises(KubectlError) as info:
        make(remote_control_plane="https://10.0.0.1:6443", kube_token="t0ken")
    message = info.value.message
    assert message.startswith("Unable to connect to the server: tls: failed to verify certificate")
    assert "certificate_authority=" in message and "insecure_skip_tls_verify=True" in message
    assert "certificate-authority-data" in message and "kube-root-ca.crt" in message
    assert not isinstance(info.value, TransientError) and sleeps == []  # not retried
    assert len(fake_runner.runs_of("apply")) == 1
    assert "t0ken" not in str(info.value)


def test_token_kubeconfig_without_ca_keeps_verification() -> None:
    from kubectl_executor._cluster.kubectl import token_kubeconfig
    from kubectl_executor.boundary import ClusterAccess

    config = token_kubeconfig(ClusterAccess(remote_control_plane="https://10.0.0.1:6443"), "t0ken")
    assert config["clusters"][0]["cluster"] == {"server": "https://10.0.0.1:6443"}  # nothing skipped


def test_restart_keeps_bashrc_variables_and_writes_them_into_the_new_pod(
    make: Make, fake_runner: FakeRunner
) -> None:
    ex = make()
    ex.add_env_vars_to_bashrc([{"key": "API_KEY", "value": "s p a c e"}])
    first = ex.pod_name
    ex.restart()
    writes = [c for c in fake_runner.runs_of("exec") if c.stdin and BASHRC_BEGIN.encode() in c.stdin]
    assert [w.args[2] for w in writes] == [first, ex.pod_name]  # once per pod
    assert b"export API_KEY='s p a c e'" in (writes[1].stdin or b"")
    ex.execute_code_blocks([CodeBlock("echo $API_KEY", "sh")])
    assert fake_runner.ran_blocks[-1].env == {"API_KEY": "s p a c e", RICH_ENV: RichLimits().env_value()}


def test_add_no_env_vars_is_no_exec(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    before = len(fake_runner.runs)
    ex.add_env_vars_to_bashrc([])
    assert len(fake_runner.runs) == before
