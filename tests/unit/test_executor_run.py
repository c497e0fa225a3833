"""``KubernetesCommandLineCodeExecutor.run``: one block, its result, no file left behind unless
asked, and the persistent session with its stateless fallback (on the fake kubectl runner)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from kx_fakes import FakeRunner, parse_request, reply_with

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor._exec.protocol import LAUNCH, RICH_ENV, RichLimits
from kubectl_executor._exec.session import Session
from kubectl_executor.errors import InvalidInputError, OutcomeUnknownError, TransientError
from kubectl_executor.executor import SCRATCH_STEM

Make = Callable[..., KubernetesCommandLineCodeExecutor]


def test_run_is_one_block_from_a_hidden_scratch_file(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor(env_vars=[{"key": "BASE", "value": "1"}])
    fake_runner.exec_replies.append(reply_with(b"42\n", 3, stderr=b"warn\n"))
    seen: list[tuple[str, bytes]] = []

    result = ex.run(
        "print(42)", "Python", timeout=7, env={"EXTRA": "x"}, on_output=lambda s, b: seen.append((s, b))
    )

    (proc,) = fake_runner.execs()
    request = parse_request(bytes(proc.stdin))
    assert (request.path, request.runner, request.timeout) == (f"{SCRATCH_STEM}.py", "python", "7")
    # The executor's env is the pod's; this run adds its own, and the rich-results budgets.
    assert request.env == {"EXTRA": "x", RICH_ENV: RichLimits().env_value()}
    assert request.code == b"print(42)"
    assert (result.exit_code, result.stdout, result.stderr, result.file, result.executed) == (
        3,
        "42\n",
        "warn\n",
        None,
        True,
    )
    assert ("stdout", b"42\n") in seen


def test_run_keeps_the_file_when_asked(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    fake_runner.exec_replies.extend([reply_with(b""), reply_with(b"")])

    named = ex.run("# filename: job.py\nprint(1)", "python")
    kept = ex.run("echo hi", "sh", keep_file=True)

    first, second = (parse_request(bytes(p.stdin)) for p in fake_runner.execs())
    assert (first.path, named.file) == ("job.py", "/workspace/job.py")
    assert second.path.startswith("tmp_code_") and kept.file == f"/workspace/{second.path}"
    assert first.timeout == "60"  # the executor's timeout


def test_run_of_a_save_only_language_saves_it(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    fake_runner.exec_replies.append(reply_with(b""))

    result = ex.run("<p>hi</p>", "html")

    request = parse_request(bytes(fake_runner.execs()[0].stdin))
    assert request.runner == "none" and request.path.endswith(".html")
    assert not result.executed and result.file == f"/workspace/{request.path}"
    assert result.stdout == f"Code saved to /workspace/{request.path}\n"


def test_run_quietens_pip_in_shell_blocks(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    fake_runner.exec_replies.append(reply_with(b""))

    ex.run("pip install requests", "bash")

    assert parse_request(bytes(fake_runner.execs()[0].stdin)).code == b"pip install -qqq requests"


def test_run_refuses_bad_input_before_any_exec(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()

    with pytest.raises(InvalidInputError, match="unsupported language 'cobol'"):
        ex.run("x", "cobol")
    with pytest.raises(InvalidInputError, match="timeout must be"):
        ex.run("x", "python", timeout=0)
    with pytest.raises(InvalidInputError, match="escapes the workspace"):
        ex.run("# filename: ../x.py\n", "python")
    assert fake_runner.execs() == []


def test_a_session_that_cannot_connect_falls_back_to_one_stateless_exec(
    make_executor: Make, fake_runner: FakeRunner, mocker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ex = make_executor(session=True)
    mocker.patch.object(
        Session, "connect", side_effect=TransientError(["kubectl", "exec"], 1, "upgrade failed")
    )
    run = mocker.patch.object(Session, "run")
    fake_runner.exec_replies.append(reply_with(b"ok\n"))

    with caplog.at_level(logging.WARNING, logger="kubectl_executor.executor"):
        result = ex.run("print('ok')", "python")

    assert result.stdout == "ok\n"
    run.assert_not_called()
    (proc,) = fake_runner.execs()
    assert LAUNCH in proc.argv  # the stateless runner
    assert "running stateless" in caplog.text


def test_a_session_block_whose_outcome_is_lost_is_not_run_again(
    make_executor: Make, fake_runner: FakeRunner, mocker: Any
) -> None:
    ex = make_executor(session=True)
    mocker.patch.object(Session, "connect")
    mocker.patch.object(Session, "run", side_effect=OutcomeUnknownError("the channel broke"))

    with pytest.raises(OutcomeUnknownError):
        ex.run("print('once')", "python")

    assert fake_runner.execs() == []  # no stateless retry of a block that may have run
