"""dispatcher.py: argument rules, the result frame, and tool calls through the real run.sh and runner.

The in-pod pieces run with the host's /bin/sh and python (a local process, never kubectl) behind the
fake kubectl runner.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kx_fakes import ExecReply, FakeRunner, ParsedRequest, parse_request

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor._exec.dispatcher import (
    build_tool_result,
    encode_payload,
    parse_arguments,
    runner_source,
)
from kubectl_executor._exec.protocol import LOADER, RUN_SCRIPT, FrameSplitter
from kubectl_executor.boundary import ToolCommandLineCodeResult
from kubectl_executor.errors import InvalidInputError, OutcomeUnknownError, UnsafePathError

Make = Callable[..., KubernetesCommandLineCodeExecutor]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

# The seed's own runner (kubernetes-robin-executor 1.1.1): reads its parameter file from argv[1].
SEED_RUNNER = """import importlib
import json
import sys


def main() -> None:
    param_path = sys.argv[1]
    with open(param_path, encoding="utf-8") as f:
        payload = json.load(f)
    module_name = payload.get("module", "robin_user")
    function_name = payload["function"]
    arguments = payload.get("arguments") or {}
    mod = importlib.import_module(module_name)
    fn = getattr(mod, function_name)
    result = fn(**arguments)
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
"""


def workspace_files(work: Path) -> list[str]:
    """Files in the workspace, besides the byte-code Python caches on import."""
    return sorted(str(p.relative_to(work)) for p in work.rglob("*") if "__pycache__" not in p.parts)


# -- local argument rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [({"a": 1}, {"a": 1}), ('{"a": [1, "é"]}', {"a": [1, "é"]}), ("{}", {}), ({}, {})],
)
def test_parse_arguments_accepts_dicts_and_json_objects(given: Any, expected: dict[str, Any]) -> None:
    assert parse_arguments(given) == expected


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("{not json", ValueError),
        ("", ValueError),
        ("[1, 2]", TypeError),
        ('"text"', TypeError),
        (["a"], TypeError),
        (42, TypeError),
        (None, TypeError),
        ({1: "x"}, TypeError),
    ],
)
def test_parse_arguments_refuses_like_the_seed(given: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_arguments(given)


@pytest.mark.parametrize(
    ("func", "module", "args", "error"),
    [
        ("not-an-identifier", None, {}, InvalidInputError),
        ("f", "os; import sys", {}, InvalidInputError),
        ("f", "../evil", {}, InvalidInputError),
        (3, None, {}, TypeError),
        ("f", None, {"x": {1, 2}}, TypeError),
    ],
)
def test_encode_payload_refusals(
    func: Any, module: Any, args: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_payload(func, args, module)


def test_payload_is_the_seeds_schema() -> None:
    assert json.loads(encode_payload("f", {"x": "é"}, None)) == {"function": "f", "arguments": {"x": "é"}}
    assert json.loads(encode_payload("f", {}, "pkg.mod"))["module"] == "pkg.mod"


def test_runner_source_sets_the_default_module_safely() -> None:
    source = runner_source("analytics.io")
    assert 'DEFAULT_MODULE = "analytics.io"\n' in source
    compile(source, "executor.py", "exec")
    with pytest.raises(InvalidInputError):
        runner_source('x"\nimport os')


# -- the frame in the stream ------------------------------------------------------------------------------------

NONCE = "0123abcd"


def framed(program: bytes, frame: bytes | None) -> bytes:
    if frame is None:
        return program
    return program + f"\n__KX_FRAME_{NONCE}__ {len(frame)}\n".encode() + frame


@pytest.mark.parametrize("chunk", [1, 2, 7, 31, 4096])
@pytest.mark.parametrize(
    ("program", "frame"),
    [
        (b"hello\nworld\n", b'{"status": "returned"}'),
        (b"no newline at end", b'{"a": "\\n__KX_FRAME_x__ 3\\n"}'),
        (b"", b"{}"),
        (b"fake tag \n__KX_FRAME_deadbeef__ 5\nabcde and more", b'{"k": 1}'),
        (b"only output, no frame\n" * 20, None),
        (b"partial \n__KX_FRAME_" + NONCE.encode() + b"__ x", None),
    ],
)
def test_frame_splitter_separates_output_and_frame(program: bytes, frame: bytes | None, chunk: int) -> None:
    out: list[bytes] = []
    splitter = FrameSplitter(NONCE, out.append, limit=1 << 20)
    stream = framed(program, frame)
    for i in range(0, len(stream), chunk):
        splitter.feed(stream[i : i + chunk])
    assert splitter.close() == frame
    assert b"".join(out) == program


def test_frame_splitter_drops_an_oversized_frame() -> None:
    out: list[bytes] = []
    splitter = FrameSplitter(NONCE, out.append, limit=10)
    splitter.feed(framed(b"out", b"x" * 100))
    assert splitter.close() is None
    assert splitter.overflow
    assert b"".join(out) == b"out"


def test_frame_cut_short_is_no_frame() -> None:
    splitter = FrameSplitter(NONCE, lambda b: None, limit=1 << 20)
    splitter.feed(framed(b"", b'{"status": "returned"}')[:-3])
    assert splitter.close() is None


def test_build_tool_result_separates_the_runners_own_output() -> None:
    frame = json.dumps(
        {
            "status": "returned",
            "value": [1],
            "value_is_json": True,
            "runner_stdout_bytes": 4,
            "runner_stderr_bytes": 0,
        }
    ).encode()
    result = build_tool_result(frame, b"log\n[1]\n", b"warn\n")
    assert result is not None
    assert result.ok and result.value == [1]
    assert result.stdout == "log\n" and result.stderr == "warn\n"
    assert build_tool_result(b"not json", b"", b"") is None
    assert build_tool_result(b'{"status": "weird"}', b"", b"") is None


# -- tool calls through the real run.sh and runner ------------------------------------------------------------


@pytest.fixture
def pod(make_executor: Make, fake_runner: FakeRunner, tmp_path: Path) -> KubernetesCommandLineCodeExecutor:
    """An executor whose 'pod' is a local workspace, with robin_user.py and the runner installed."""
    work = tmp_path / "ws"
    work.mkdir()
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    ex.upload_from_disk(FIXTURES / "robin_user.py")
    assert ex.install_pod_dispatcher() == f"{work}/executor.py"
    return ex


def test_call_returns_seed_output_and_structure(pod: KubernetesCommandLineCodeExecutor) -> None:
    result = pod.execute_tool_function({"name": "Ada"}, "greet")
    assert isinstance(result, ToolCommandLineCodeResult)
    assert result.exit_code == 0
    assert result.output == "Hello, Ada!\n"
    assert result.tool_result is not None
    assert result.tool_result.value == "Hello, Ada!"
    assert result.tool_result.value_is_json
    assert result.tool_result.stdout == ""
    assert (result.tool_result.module, result.tool_result.function) == ("robin_user", "greet")


def test_call_with_json_string_and_function_output(pod: KubernetesCommandLineCodeExecutor) -> None:
    result = pod.execute_tool_function('{"lines": 2}', "noisy")
    assert result.exit_code == 0
    assert result.stdout == "out 0\nout 1\ndone\n"
    assert result.stderr == "err 0\nerr 1\n"
    assert result.tool_result is not None
    assert result.tool_result.stdout == "out 0\nout 1\n"
    assert result.tool_result.stderr == "err 0\nerr 1\n"
    assert result.tool_result.value == "done"


def test_call_that_raises_is_exit_1_with_the_exception(pod: KubernetesCommandLineCodeExecutor) -> None:
    result = pod.execute_tool_function({"message": "stage 3 exploded"}, "fail")
    assert result.exit_code == 1
    assert "robin_user.PipelineError: stage 3 exploded" in result.stderr
    tool = result.tool_result
    assert tool is not None and tool.status == "raised" and tool.error is not None
    assert tool.error.type == "robin_user.PipelineError"
    assert tool.error.message == "stage 3 exploded"
    assert 'robin_user.py", line' in tool.error.traceback
    assert "executor.py" not in tool.error.traceback  # the runner's own frames are cut
    assert tool.stderr == "about to fail\n"


def test_mismatched_arguments_are_a_typeerror_in_the_pod(pod: KubernetesCommandLineCodeExecutor) -> None:
    result = pod.execute_tool_function({"nobody": "x"}, "greet")
    assert result.exit_code == 1
    assert result.tool_result is not None and result.tool_result.error is not None
    assert result.tool_result.error.type == "TypeError"
    assert "unexpected keyword argument 'nobody'" in result.tool_result.error.message


def test_async_function_is_awaited_and_non_json_value_has_a_repr(
    pod: KubernetesCommandLineCodeExecutor,
) -> None:
    later = pod.execute_tool_function({"name": "Bo"}, "greet_later")
    assert later.output == "Later, Bo!\n"
    assert later.tool_result is not None and later.tool_result.value == "Later, Bo!"
    odd = pod.execute_tool_function({}, "not_json")
    assert odd.tool_result is not None
    assert not odd.tool_result.value_is_json and odd.tool_result.value is None
    assert odd.tool_result.value_repr == "{1, 2, 3}"


def test_missing_function_and_module_are_results(pod: KubernetesCommandLineCodeExecutor) -> None:
    missing = pod.execute_tool_function({}, "no_such_function")
    assert missing.exit_code == 1
    assert missing.tool_result is not None and missing.tool_result.error is not None
    assert missing.tool_result.error.type == "AttributeError"
    other = pod.execute_tool_function({}, "f", module="no_such_module")
    assert other.tool_result is not None and other.tool_result.error is not None
    assert other.tool_result.error.type == "ModuleNotFoundError"


def test_arguments_travel_on_stdin_and_leave_no_file(
    pod: KubernetesCommandLineCodeExecutor, fake_runner: FakeRunner
) -> None:
    secret = "unicodé ✓ \"quotes\" $(touch pwned) `id` 'x'\n" * 2000  # ~90 kB
    before = workspace_files(pod.work_dir)
    result = pod.execute_tool_function({"text": secret}, "measure")
    assert result.exit_code == 0, result.output
    assert result.tool_result is not None
    assert result.tool_result.value["chars"] == len(secret)
    call = fake_runner.spawns[-1]
    assert not any("unicod" in arg for arg in call.argv)
    assert "unicodé".encode() in bytes(call.stdin)
    assert workspace_files(pod.work_dir) == before
    assert not (Path.cwd() / "pwned").exists()


def test_bad_arguments_fail_before_any_kubectl(
    pod: KubernetesCommandLineCodeExecutor, fake_runner: FakeRunner
) -> None:
    before = len(fake_runner.spawns) + len(fake_runner.runs)
    for bad, error in (("{oops", ValueError), ("[1]", TypeError), (7, TypeError)):
        with pytest.raises(error):
            pod.execute_tool_function(bad, "greet")
    with pytest.raises(UnsafePathError):
        pod.execute_tool_function({}, "greet", runner_script="../executor.py")
    assert len(fake_runner.spawns) + len(fake_runner.runs) == before


def test_runner_baked_into_the_image_without_install(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    work = tmp_path / "ws"
    (work / "tools").mkdir(parents=True)
    (work / "tools" / "run_tool.py").write_text(runner_source("robin_user"))
    (work / "robin_user.py").write_text((FIXTURES / "robin_user.py").read_text())
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    result = ex.execute_tool_function({"name": "img"}, "greet", runner_script="tools/run_tool.py")
    assert result.output == "Hello, img!\n"
    assert result.tool_result is not None and result.tool_result.value == "Hello, img!"


def test_the_seeds_own_runner_still_works(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    work = tmp_path / "ws"
    work.mkdir()
    (work / "executor.py").write_text(SEED_RUNNER)
    (work / "robin_user.py").write_text((FIXTURES / "robin_user.py").read_text())
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    result = ex.execute_tool_function({"name": "seed"}, "greet")
    assert result.exit_code == 0
    assert result.output == "Hello, seed!\n"
    assert result.tool_result is None  # that runner writes no structure
    assert workspace_files(work) == ["executor.py", "robin_user.py"]


def test_missing_runner_says_what_to_do(make_executor: Make, fake_runner: FakeRunner, tmp_path: Path) -> None:
    work = tmp_path / "ws"
    work.mkdir()
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    result = ex.execute_tool_function({}, "greet")
    assert result.exit_code == 2
    assert "install_pod_dispatcher" in result.output


def test_timeout_is_enforced_in_the_pod(pod: KubernetesCommandLineCodeExecutor) -> None:
    pod.upload_file_content(
        "slow.py", "import time\ndef nap():\n    print('zz', flush=True)\n    time.sleep(60)\n"
    )
    result = pod.execute_tool_function({}, "nap", module="slow", timeout=1)
    assert result.exit_code == 124
    assert result.timed_out
    assert result.stdout == "zz\n"
    assert "Timeout" in result.output


def test_no_marker_is_outcome_unknown_and_not_rerun(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    calls: list[ParsedRequest] = []

    def dropped(request: ParsedRequest) -> ExecReply:
        calls.append(request)
        return ExecReply(f"__KX_START_{request.nonce}__\npartial".encode(), returncode=0)

    fake_runner.exec_replies.append(dropped)
    with pytest.raises(OutcomeUnknownError):
        ex.execute_tool_function({}, "greet")
    assert len(calls) == 1
    assert calls[0].runner == "call"


def test_exec_not_started_is_retried_once_started_never(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    seen: list[ParsedRequest] = []

    def refused(request: ParsedRequest) -> ExecReply:
        seen.append(request)
        return ExecReply(b"", stderr=b"error dialing backend: connection refused\n", returncode=1, ran=False)

    def answer(request: ParsedRequest) -> ExecReply:
        seen.append(request)
        nonce = request.nonce
        frame = b'{"status": "returned", "value": 5, "value_is_json": true, "runner_stdout_bytes": 2}'
        body = f"__KX_START_{nonce}__\n5\n\n__KX_FRAME_{nonce}__ {len(frame)}\n".encode() + frame
        return ExecReply(body + f"\n__KX_EXIT_{nonce}__ 0 0 0 /tmp/kx-logs\n".encode())

    fake_runner.exec_replies.extend([refused, answer])
    result = ex.execute_tool_function({}, "five")
    assert result.output == "5\n"
    assert result.tool_result is not None and result.tool_result.value == 5
    assert len(seen) == 2 and not fake_runner.exec_replies
    assert json.loads(seen[1].code) == {"function": "five", "arguments": {}}


def test_module_name_in_payload_not_argv(
    pod: KubernetesCommandLineCodeExecutor, fake_runner: FakeRunner
) -> None:
    pod.execute_tool_function({}, "greet", module="robin_user")
    call = fake_runner.spawns[-1]
    assert call.argv[-3:] == [parse_request(bytes(call.stdin)).nonce, LOADER, RUN_SCRIPT]
    assert not any("robin_user" in arg for arg in call.argv)
    assert b'"module": "robin_user"' in bytes(call.stdin)
