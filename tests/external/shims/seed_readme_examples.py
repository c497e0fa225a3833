"""The seed README's examples 1-5, run as written (after the rewrites listed in rules.toml).

The README (README-KubernetesCommandLineCodeExecutor.md of the kubernetes-robin-executor sdist)
is read from the run directory; each example is the first ``python`` block under its "### N."
heading in "## Examples". Example 1 is a whole program. Examples 2-4 are fragments that use the
``executor`` of example 1: they run after example 1's own imports, with an executor built from
example 1's own constructor arguments (taken from its text, not written here). Example 5 runs
after example 1's imports too (it has none of its own). Example 4 reads ``robin_user.py`` from
the current directory: the README's own minimal robin_user.py is written there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = (
    Path(__file__).parent
    / "src/autogen_kubernetes/code_executors/README-KubernetesCommandLineCodeExecutor.md"
)
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def examples() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    found: dict[int, str] = {}
    for chunk in re.split(r"\n### ", section)[1:]:
        number = int(chunk.split(".", 1)[0])
        block = FENCE.search(chunk)
        assert block is not None, f"example {number} has no python block"
        found[number] = block.group(1)
    assert sorted(found) == [1, 2, 3, 4, 5], sorted(found)
    return found


def robin_user_source() -> str:
    """The README's "Minimal robin_user.py" block."""
    blocks = FENCE.findall(README.read_text(encoding="utf-8"))
    return next(b for b in blocks if b.startswith("# robin_user.py"))


def prelude() -> str:
    """Example 1 up to its `with` statement: its imports (rewritten to ours) and KUBE_TOKEN setup."""
    return examples()[1].split("\nwith ", 1)[0] + "\n"


def executor_of_example_1() -> str:
    """``executor = KubernetesCommandLineCodeExecutor(<example 1's arguments>)``."""
    head = examples()[1].split("\nwith KubernetesCommandLineCodeExecutor(", 1)[1]
    arguments = head.split(") as executor:", 1)[0]
    return f"executor = KubernetesCommandLineCodeExecutor({arguments})\n"


def run(code: str, name: str, scope: dict[str, Any] | None = None) -> dict[str, Any]:
    scope = {"__name__": "__main__"} if scope is None else scope
    exec(compile(code, name, "exec"), scope)
    return scope


def run_fragment(number: int) -> dict[str, Any]:
    """Examples 2-4 on example 1's executor, stopped afterwards."""
    scope = run(prelude() + executor_of_example_1(), "example-1-setup")
    try:
        return run(examples()[number], f"example-{number}", scope)
    finally:
        scope["executor"].stop()


def test_the_readme_has_the_rewritten_import() -> None:
    assert "from kubectl_executor import CodeBlock" in prelude()
    assert "autogen_kubernetes" not in prelude()


def test_example_1_remote_cluster_with_token(readme_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run(examples()[1], "example-1")
    printed = capsys.readouterr().out
    assert printed.startswith("0 hello"), printed  # print(result.exit_code, result.output)


def test_example_2_save_only(readme_cluster: Any) -> None:
    scope = run_fragment(2)
    result = scope["result"]
    assert result.exit_code == 0
    assert "Code saved to" in result.output  # what the README says to expect
    assert "does not run" not in result.output


def test_example_3_shell(readme_cluster: Any) -> None:
    result = run_fragment(3)["result"]
    assert result.exit_code == 0
    assert result.output.startswith("ok\n")  # then uname -a
    assert "Linux" in result.output


def test_example_4_tool_call(readme_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "robin_user.py").write_text(robin_user_source())
    result = run_fragment(4)["result"]
    # The README's robin_user.py has greet and run_heavy_pipeline, and the example calls
    # my_function: in the pod that is an AttributeError, reported as the call's exit code 1.
    assert result.exit_code == 1
    assert "my_function" in result.output and "AttributeError" in result.output


def test_example_5_local_kubeconfig(readme_cluster: Any) -> None:
    scope = run(prelude() + examples()[5], "example-5")
    executor = scope["executor"]
    assert executor.namespace == "default" and str(executor.work_dir) == "/tmp/work"
    assert executor.is_pod_running_with_image() is None  # the with block deleted its pod
