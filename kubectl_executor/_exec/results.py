"""Result and input types (the seed's names), plus the markdown code extractor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError

if TYPE_CHECKING:
    pass


@dataclass
class CodeBlock:
    """A block of code and its language (positional or keyword, like autogen's)."""

    code: str
    language: str

    def __post_init__(self) -> None:
        for name in ("code", "language"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(
                    f"CodeBlock.{name} must be a str, not {type(getattr(self, name)).__name__}"
                )


_SHELL_START = re.compile(r"^\s*(pip3?|python3?|apt(-get)?|ls|cd|echo|export|cat|mkdir|curl|git)\b")


def infer_language(code: str) -> str:
    """Untagged fence: shell if it starts like a command, python if it parses, else unknown."""
    if _SHELL_START.match(code) and not code.lstrip().startswith(("python3(", "python(")):
        return "sh"
    try:
        import ast  # here: only python-looking blocks need it

        ast.parse(code)
    except SyntaxError:
        return "unknown"
    return "python"


class MarkdownCodeExtractor:
    """Fenced blocks (``` and ~~~, longer fences, info strings) found by a CommonMark parser."""

    def extract_code_blocks(self, message: str | list[Any] | None) -> list[CodeBlock]:
        from markdown_it import MarkdownIt  # imported on use: keeps `import kubectl_executor` fast

        text = _content_to_text(message)
        blocks = []
        for token in MarkdownIt("commonmark").parse(text):
            if token.type != "fence":
                continue
            info = token.info.strip().split()
            language = info[0].strip("{}.").lower() if info else ""
            code = token.content
            blocks.append(CodeBlock(code=code, language=language or infer_language(code)))
        return blocks


def _content_to_text(message: str | list[Any] | None) -> str:
    if message is None:
        return ""
    if isinstance(message, str):
        return message
    parts = []
    for item in message:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text":
            parts.append(str(item.get("text", "")))
    return "\n".join(parts)
