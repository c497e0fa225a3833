"""results.py: the markdown code extractor and the result types."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_executor._exec.results import CodeBlock, MarkdownCodeExtractor, infer_language
from kubectl_executor.boundary import CommandLineCodeResult


def extract(text: str | list[Any] | None) -> list[tuple[str, str]]:
    return [(b.language, b.code) for b in MarkdownCodeExtractor().extract_code_blocks(text)]


def test_backtick_fence() -> None:
    assert extract("Run this:\n```python\nprint(1)\n```\nDone.") == [("python", "print(1)\n")]


def test_tilde_fence() -> None:
    assert extract("~~~bash\nls -la\n~~~\n") == [("bash", "ls -la\n")]


def test_longer_fence_containing_a_shorter_one() -> None:
    text = "````markdown\nExample:\n```python\nprint(1)\n```\n````\n"
    assert extract(text) == [("markdown", "Example:\n```python\nprint(1)\n```\n")]


def test_tilde_fence_containing_backticks() -> None:
    text = "~~~sh\ncat <<'X'\n```\nX\n~~~\n"
    assert extract(text) == [("sh", "cat <<'X'\n```\nX\n")]


@pytest.mark.parametrize(
    ("info", "language"),
    [
        ("python title=x", "python"),
        ('python title="main.py" linenums=1', "python"),
        ("Python", "python"),
        ("{python}", "python"),
        (".py", "py"),
        ("  sh  ", "sh"),
    ],
)
def test_info_strings(info: str, language: str) -> None:
    assert extract(f"```{info}\necho 1\n```\n") == [(language, "echo 1\n")]


def test_several_blocks_in_order() -> None:
    text = "a\n```python\nx = 1\n```\nb\n~~~sh\necho 2\n~~~\nc\n```html\n<p>\n```\n"
    assert [lang for lang, _ in extract(text)] == ["python", "sh", "html"]


def test_code_with_blank_lines_and_indentation_is_kept() -> None:
    code = "def f():\n\n    return 1\n\n\nprint(f())\n"
    assert extract(f"```python\n{code}```\n") == [("python", code)]


def test_unclosed_fence_runs_to_the_end() -> None:
    assert extract("```python\nprint(1)\n") == [("python", "print(1)\n")]


def test_no_blocks() -> None:
    assert extract("just prose, `inline code` and\n\n    an indented block\n") == []
    assert extract("") == []
    assert extract(None) == []


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("pip install numpy\n", "sh"),
        ("ls -la\n", "sh"),
        ("echo hi\n", "sh"),
        ("python3 script.py\n", "sh"),
        ("x = 1\nprint(x)\n", "python"),
        ("import os\n", "python"),
        ("python(1)\n", "python"),
        ("this is not code at all!\n", "unknown"),
    ],
)
def test_untagged_fences_are_inferred(code: str, language: str) -> None:
    assert extract(f"```\n{code}```\n") == [(language, code)]


def test_message_as_content_parts() -> None:
    parts = [
        {"type": "text", "text": "```py\n1\n```"},
        {"type": "image_url", "image_url": "x"},
        "~~~sh\nls\n~~~",
    ]
    assert extract(parts) == [("py", "1\n"), ("sh", "ls\n")]


def test_code_block_positional_and_keyword() -> None:
    assert CodeBlock("print(1)", "python") == CodeBlock(code="print(1)", language="python")


def test_result_defaults_and_fields() -> None:
    r = CommandLineCodeResult(exit_code=1, output="boom")
    assert (r.code_file, r.stdout, r.stderr, r.timed_out, r.truncated, r.log_files) == (
        None,
        "",
        "",
        False,
        False,
        [],
    )
    assert infer_language("ls") == "sh"
