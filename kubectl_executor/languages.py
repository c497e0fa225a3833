"""Languages, file names and execution policies (pure; the seed's table, case-insensitive)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import UnsafePathError


@dataclass(frozen=True)
class Language:
    """``runner`` names the interpreter the in-pod wrapper uses; None means save-only."""

    name: str
    extension: str
    runner: str | None


LANGUAGES: dict[str, Language] = {
    "python": Language("python", "py", "python"),
    "bash": Language("bash", "sh", "bash"),
    "sh": Language("sh", "sh", "sh"),
    "pwsh": Language("pwsh", "ps1", "pwsh"),
    "javascript": Language("javascript", "js", None),
    "html": Language("html", "html", None),
    "css": Language("css", "css", None),
}

ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "shell": "sh",
    "console": "sh",
    "powershell": "pwsh",
    "ps1": "pwsh",
    "js": "javascript",
}

# The seed's policy keys and defaults: run scripts, only save web files.
DEFAULT_EXECUTION_POLICIES: dict[str, bool] = {
    "python": True,
    "bash": True,
    "sh": True,
    "shell": True,
    "pwsh": True,
    "powershell": True,
    "ps1": True,
    "javascript": False,
    "html": False,
    "css": False,
}


def canonical_language(name: str) -> str:
    """``"Python"`` -> ``"python"``, ``"SHELL"`` -> ``"sh"``; unknown names come back lowered."""
    low = name.strip().lower()
    return ALIASES.get(low, low)


def resolve_language(name: str) -> Language | None:
    return LANGUAGES.get(canonical_language(name))


def should_execute(name: str, policies: dict[str, bool]) -> bool:
    """A policy may be keyed by the name as written, lowered, or canonical."""
    low = name.strip().lower()
    for key in (low, canonical_language(low)):
        if key in policies:
            return policies[key]
    lang = resolve_language(low)
    return bool(lang and lang.runner)


_HINTS = (
    re.compile(r"^<!--\s*(filename:)?\s*(.+?)\s*-->\s*$"),
    re.compile(r"^/\*\s*(filename:)?\s*(.+?)\s*\*/\s*$"),
    re.compile(r"^//\s*(filename:)?\s*(.+?)\s*$"),
    re.compile(r"^#\s*(filename:)?\s*(.+?)\s*$"),
)
# Without "filename:" only something that looks like a file name counts, so that an ordinary
# first-line comment ("# compute primes") is not taken for one.
_BARE_NAME = re.compile(r"^[\w.\-/]+\.\w+$")


def filename_hint(code: str) -> str | None:
    """The file name named on the code's first line, if any (not yet validated)."""
    first = code.split("\n", 1)[0].strip()
    for pattern in _HINTS:
        m = pattern.match(first)
        if m:
            name = m.group(2).strip()
            if m.group(1) or _BARE_NAME.match(name):
                return name
            return None
    return None


def validate_relative_path(path: str) -> str:
    """A path under the workspace: relative, no ``..``, no NUL/newline. Returns it normalised."""
    if not path or not path.strip():
        raise UnsafePathError("empty path")
    if "\x00" in path or "\n" in path or "\r" in path:
        raise UnsafePathError(f"path {path!r} contains NUL or a line break")
    if path != path.strip():
        raise UnsafePathError(f"path {path!r} has leading or trailing white space")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("~"):
        raise UnsafePathError(f"path {path!r} must be relative to the workspace")
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(f"path {path!r} escapes the workspace")
    parts = [p for p in pure.parts if p != "."]
    if not parts:
        raise UnsafePathError(f"path {path!r} names the workspace itself")
    return str(PurePosixPath(*parts))


def code_filename(code: str, language: Language) -> str:
    """The hinted name, else the seed's ``tmp_code_<md5>.<ext>``."""
    hinted = filename_hint(code)
    if hinted is not None:
        return validate_relative_path(hinted)
    digest = hashlib.md5(code.encode()).hexdigest()
    return f"tmp_code_{digest}.{language.extension}"


_PIP_INSTALL = re.compile(r"^(\s*(?:python3? -m )?pip3? install)(?![^\n]*\s-q)", re.M)


def quiet_pip(code: str) -> str:
    """The seed quietens ``pip install`` lines in shell blocks; so do we (unless already -q)."""
    return _PIP_INSTALL.sub(r"\1 -qqq", code)
