"""Tool functions through the real kubectl (emulator or a real cluster): the fixture modules, uploaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import robin_user  # fixtures/robin_user.py: the same file that is uploaded, run here for expectations
from kx_cluster import ExecutorFactory

from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor
from kubectl_executor.boundary import ToolCommandLineCodeResult

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BLOB = (FIXTURES / "sample_pkg" / "analytics" / "data" / "blob.bin").read_bytes()

SEED_RUNNER = """import importlib, json, sys
payload = json.load(open(sys.argv[1], encoding="utf-8"))
mod = importlib.import_module(payload.get("module", "robin_user"))
result = getattr(mod, payload["function"])(**(payload.get("arguments") or {}))
if result is not None:
    print(result)
"""


@pytest.fixture
def tools(executor: KubernetesCommandLineCodeExecutor) -> KubernetesCommandLineCodeExecutor:
    """The single-module fixture uploaded and the dispatcher installed."""
    assert executor.upload_from_disk(FIXTURES / "robin_user.py") == [f"{executor.work_dir}/robin_user.py"]
    assert executor.install_pod_dispatcher() == f"{executor.work_dir}/executor.py"
    return executor


def workspace(executor: KubernetesCommandLineCodeExecutor) -> list[str]:
    code = (
        "import os\nfor d, dirs, files in os.walk('.'):\n"
        "    dirs[:] = [x for x in dirs if x != '__pycache__']\n"
        "    for f in files:\n        print(os.path.join(d, f))"
    )
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    return sorted(line for line in result.stdout.splitlines() if "tmp_code_" not in line)


def pod_processes(executor: KubernetesCommandLineCodeExecutor) -> list[str]:
    code = (
        "import os\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
        "            print(open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
        "        except OSError:\n            pass"
    )
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_greet(tools: KubernetesCommandLineCodeExecutor) -> None:
    result = tools.execute_tool_function({"name": "Robin"}, "greet")
    assert isinstance(result, ToolCommandLineCodeResult)
    assert (result.exit_code, result.output) == (0, "Hello, Robin!\n")
    assert result.tool_result is not None
    assert result.tool_result.value == "Hello, Robin!"
    assert result.tool_result.ok
    json_string = tools.execute_tool_function('{"name": "Ada", "greeting": "Hi"}', "greet")
    assert json_string.output == "Hi, Ada!\n"


def test_run_heavy_pipeline_matches_a_local_run(tools: KubernetesCommandLineCodeExecutor) -> None:
    args = {"n_items": 200_000, "seed": 11, "stages": ["square", "keep_even", "sort"]}
    expected = robin_user.run_heavy_pipeline(**args)  # type: ignore[arg-type]
    result = tools.execute_tool_function(args, "run_heavy_pipeline")
    assert result.exit_code == 0, result.output
    assert result.tool_result is not None
    assert result.tool_result.value == expected
    assert result.tool_result.stdout.splitlines()[0].startswith("stage square: 200000 values")
    assert result.output == result.tool_result.stdout + f"{expected}\n"


def test_function_that_raises(tools: KubernetesCommandLineCodeExecutor) -> None:
    result = tools.execute_tool_function({"message": "stage 3 exploded"}, "fail")
    assert result.exit_code == 1
    assert "robin_user.PipelineError: stage 3 exploded" in result.output
    tool = result.tool_result
    assert tool is not None and tool.status == "raised" and tool.error is not None
    assert tool.error.type == "robin_user.PipelineError"
    assert tool.error.message == "stage 3 exploded"
    assert f'File "{tools.work_dir}/robin_user.py"' in tool.error.traceback
    assert tool.stderr == "about to fail\n"


def test_mismatched_arguments_are_a_typeerror_in_the_pod(tools: KubernetesCommandLineCodeExecutor) -> None:
    result = tools.execute_tool_function({"nobody": 1}, "greet")
    assert result.exit_code == 1
    assert "TypeError" in result.stderr
    assert result.tool_result is not None and result.tool_result.error is not None
    assert result.tool_result.error.type == "TypeError"


def test_async_function_is_awaited(tools: KubernetesCommandLineCodeExecutor) -> None:
    result = tools.execute_tool_function({"name": "Kim", "delay": 0.05}, "greet_later")
    assert result.output == "Later, Kim!\n"
    assert result.tool_result is not None and result.tool_result.value == "Later, Kim!"


def test_unicode_and_big_arguments_leave_no_file(tools: KubernetesCommandLineCodeExecutor) -> None:
    before = workspace(tools)
    odd = {
        "emoji": "🦀✓",
        "rtl": "שלום",
        "nul": "a\x00b",
        "quotes": "'\"`$(id)`",
        "nested": {"k": [1.5, None]},
    }
    echoed = tools.execute_tool_function(odd, "echo")
    assert echoed.exit_code == 0, echoed.output
    assert echoed.tool_result is not None and echoed.tool_result.value == odd
    big = "ünïcødé payload " * 400_000  # 6.4 M characters, ~8 MB of UTF-8
    measured = tools.execute_tool_function(json.dumps({"text": big}), "measure")
    assert measured.exit_code == 0, measured.output[-2000:]
    assert measured.tool_result is not None
    assert measured.tool_result.value == {
        "chars": len(big),
        "bytes": len(big.encode()),
        "sha256": hashlib.sha256(big.encode()).hexdigest(),
    }
    assert workspace(tools) == before  # arguments came on stdin: no parameter file


def test_a_non_json_value_comes_back_as_repr(tools: KubernetesCommandLineCodeExecutor) -> None:
    result = tools.execute_tool_function({}, "not_json")
    assert result.output == "{1, 2, 3}\n"
    assert result.tool_result is not None
    assert not result.tool_result.value_is_json
    assert result.tool_result.value_repr == "{1, 2, 3}"


def test_tree_with_nested_packages_and_a_submodule_call(executor: KubernetesCommandLineCodeExecutor) -> None:
    paths = executor.upload_from_disk(FIXTURES / "sample_pkg")
    assert f"{executor.work_dir}/analytics/io/blobs.py" in paths
    assert f"{executor.work_dir}/analytics/data/blob.bin" in paths
    executor.install_pod_dispatcher(default_module="robin_user", runner_filename="tools/dispatch.py")
    pipeline = executor.execute_tool_function(
        {"values": [1.0, 2.0, 6.0], "repeat": 2}, "run_heavy_pipeline", runner_script="tools/dispatch.py"
    )
    assert pipeline.exit_code == 0, pipeline.output
    assert pipeline.tool_result is not None
    assert pipeline.tool_result.value == {
        "n": 6,
        "mean": 3.0,
        "min": 1.0,
        "max": 6.0,
        "blob": {"size": len(BLOB), "sha256": hashlib.sha256(BLOB).hexdigest()},
    }
    histogram = executor.execute_tool_function(
        {}, "byte_histogram", module="analytics.io.blobs", runner_script="tools/dispatch.py"
    )
    assert histogram.tool_result is not None and histogram.tool_result.value == [5] * 256
    empty = executor.execute_tool_function(
        {"values": []}, "mean", module="analytics.stats", runner_script="tools/dispatch.py"
    )
    assert empty.exit_code == 1
    assert empty.tool_result is not None and empty.tool_result.error is not None
    assert (empty.tool_result.error.type, empty.tool_result.error.message) == (
        "ValueError",
        "mean of an empty list",
    )


def test_runner_already_in_the_image(executor_factory: ExecutorFactory) -> None:
    ex = executor_factory()
    ex.upload_from_disk(FIXTURES / "robin_user.py")
    # Not installed by us: the seed's own runner, as an image built for the seed would ship it.
    made = ex.execute_code_blocks(
        [CodeBlock(f"open('{ex.work_dir}/executor.py', 'w').write({SEED_RUNNER!r})", "python")]
    )
    assert made.exit_code == 0, made.output
    result = ex.execute_tool_function({"name": "image"}, "greet")
    assert (result.exit_code, result.output) == (0, "Hello, image!\n")
    assert result.tool_result is None
    raised = ex.execute_tool_function({"message": "x"}, "fail")
    assert raised.exit_code == 1 and "PipelineError" in raised.output


def test_tool_call_timeout_is_enforced_in_the_pod(tools: KubernetesCommandLineCodeExecutor) -> None:
    tools.upload_file_content(
        "slow.py", "import time\n\ndef nap():\n    print('zz', flush=True)\n    time.sleep(120)\n"
    )
    result = tools.execute_tool_function({}, "nap", module="slow", timeout=2)
    assert result.exit_code == 124 and result.timed_out
    assert result.stdout == "zz\n"
    assert not [cmd for cmd in pod_processes(tools) if "executor.py" in cmd]
