"""Languages, file names and execution policies (pure; the seed's table, case-insensitive)."""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..defaults import WORK_DIR
from ..errors import UnsafePathError


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


# The seed's own alias map: its policy key and file extension for a block is the language
# lowered and passed through this map ("py" -> "python"; "shell", "bash", "ps1" stay themselves).
SEED_ALIASES: dict[str, str] = {"py": "python", "js": "javascript"}


def seed_language(name: str) -> str:
    """The seed's name for a block's language (its policy key and file extension).

    Names the seed does not know but we accept (``python3``, ``console``) map to our canonical
    name, so that they find a policy key at all.
    """
    low = name.strip().lower()
    seed = SEED_ALIASES.get(low, low)
    return seed if seed in DEFAULT_EXECUTION_POLICIES else canonical_language(low)


def should_execute(name: str, policies: Mapping[str, object]) -> bool:
    """Whether a block in language ``name`` runs (else it is only saved).

    As in the seed, the block's own key decides and a missing key means "save only". Beyond the
    seed, a False under any other name of the same language ("py", "Python", "shell" for sh) also
    stops it: the most restrictive entry wins, so a policy the user set is never ignored.
    """
    lang = resolve_language(name)
    if lang is None or lang.runner is None:
        return False
    if not policies.get(seed_language(name), False):
        return False
    canonical = canonical_language(name)
    return all(bool(value) for key, value in policies.items() if canonical_language(str(key)) == canonical)


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


def workspace_relative(path: str, work_dir: str = WORK_DIR) -> str:
    """A file-name hint as a path relative to ``work_dir``, normalised; refused if it leaves it.

    Like the seed, an absolute path inside ``work_dir`` and ``..`` that stays inside are accepted
    (``/workspace/a/../b.py`` -> ``b.py``); anything else outside raises :class:`UnsafePathError`.
    """
    if "\x00" in path or "\n" in path or "\r" in path:
        raise UnsafePathError(f"path {path!r} contains NUL or a line break")
    if path.startswith("~"):
        raise UnsafePathError(f"path {path!r} must be relative to the workspace")
    root = posixpath.normpath(work_dir)
    full = posixpath.normpath(posixpath.join(root, path))
    if full != root and not full.startswith(root.rstrip("/") + "/"):
        raise UnsafePathError(f"path {path!r} escapes the workspace {work_dir}")
    return validate_relative_path(posixpath.relpath(full, root))


def code_filename(code: str, language: Language, name: str | None = None, work_dir: str = WORK_DIR) -> str:
    """The hinted name, else the seed's ``tmp_code_<md5>.<lang>``.

    With ``name`` (the block's language as written) ``<lang>`` is the seed's name for it:
    ``.python``, ``.sh``, ``.bash``, ``.shell``, ``.javascript``; PowerShell keeps ``.ps1`` (pwsh
    refuses to run a script with any other extension). Without it, the language's usual extension.
    """
    hinted = filename_hint(code)
    if hinted is not None:
        return workspace_relative(hinted, work_dir)
    digest = hashlib.md5(code.encode()).hexdigest()
    seed_named = name is not None and language.name != "pwsh"
    extension = seed_language(name) if seed_named and name else language.extension
    return f"tmp_code_{digest}.{extension}"


def block_file(code: str, name: str, work_dir: str = WORK_DIR) -> str | None:
    """The pod path a block of language ``name`` is written to, known before it runs (an
    adapter names it for a block cancelled before its result came back); None where the block
    would be refused (unsupported language, a hinted name outside the workspace)."""
    lang = resolve_language(name)
    if lang is None:
        return None
    try:
        filename = code_filename(silence_pip(code, name), lang, name, work_dir)
    except UnsafePathError:
        return None
    return posixpath.join(work_dir, filename)


def silence_pip(code: str, name: str) -> str:
    """The seed's own ``pip install`` quietening (its file names are the md5 of the result).

    Python blocks: lines starting ``!pip install`` / ``! pip install``; shell blocks: lines
    starting ``pip install``; ``-qqq`` is added unless the line already has it.
    """
    lang = seed_language(name)
    if lang == "python":
        pattern = re.compile(r"^! ?pip install")
    elif lang in ("bash", "shell", "sh", "pwsh", "powershell", "ps1"):
        pattern = re.compile(r"^pip install")
    else:
        return code
    lines = code.split("\n")
    for i, line in enumerate(lines):
        match = pattern.search(line)
        if match is not None and "-qqq" not in line:
            lines[i] = line.replace(match.group(0), match.group(0) + " -qqq")
    return "\n".join(lines)


_PIP_INSTALL = re.compile(r"^(\s*(?:python3? -m )?pip3? install)(?![^\n]*\s-q)", re.M)


def quiet_pip(code: str) -> str:
    """The seed quietens ``pip install`` lines in shell blocks; so do we (unless already -q)."""
    return _PIP_INSTALL.sub(r"\1 -qqq", code)
