"""languages.py: names, aliases, file-name hints, path confinement, file naming, pip quieting."""

from __future__ import annotations

import hashlib

import pytest

from kubectl_executor._exec.languages import (
    DEFAULT_EXECUTION_POLICIES,
    LANGUAGES,
    block_file,
    canonical_language,
    code_filename,
    filename_hint,
    quiet_pip,
    resolve_language,
    seed_language,
    should_execute,
    silence_pip,
    validate_relative_path,
    workspace_relative,
)
from kubectl_executor.errors import InvalidInputError, UnsafePathError


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("python", "python"),
        ("Python", "python"),
        ("PYTHON", "python"),
        (" python ", "python"),
        ("py", "python"),
        ("python3", "python"),
        ("sh", "sh"),
        ("SH", "sh"),
        ("shell", "sh"),
        ("Shell", "sh"),
        ("console", "sh"),
        ("bash", "bash"),
        ("Bash", "bash"),
        ("pwsh", "pwsh"),
        ("powershell", "pwsh"),
        ("PowerShell", "pwsh"),
        ("ps1", "pwsh"),
        ("js", "javascript"),
        ("javascript", "javascript"),
        ("HTML", "html"),
        ("css", "css"),
    ],
)
def test_aliases_and_case(written: str, canonical: str) -> None:
    assert canonical_language(written) == canonical
    lang = resolve_language(written)
    assert lang is not None and lang.name == canonical


@pytest.mark.parametrize("name", ["ruby", "", "pythonn", "c++"])
def test_unknown_languages(name: str) -> None:
    assert resolve_language(name) is None


def test_runners_and_extensions() -> None:
    assert (LANGUAGES["python"].extension, LANGUAGES["python"].runner) == ("py", "python")
    assert (LANGUAGES["bash"].extension, LANGUAGES["bash"].runner) == ("sh", "bash")
    assert (LANGUAGES["sh"].extension, LANGUAGES["sh"].runner) == ("sh", "sh")
    assert (LANGUAGES["pwsh"].extension, LANGUAGES["pwsh"].runner) == ("ps1", "pwsh")
    for saved_only in ("javascript", "html", "css"):
        assert LANGUAGES[saved_only].runner is None


@pytest.mark.parametrize(
    ("name", "policies", "expected"),
    [
        ("python", DEFAULT_EXECUTION_POLICIES, True),
        ("Python", DEFAULT_EXECUTION_POLICIES, True),
        ("shell", DEFAULT_EXECUTION_POLICIES, True),
        ("ps1", DEFAULT_EXECUTION_POLICIES, True),
        ("html", DEFAULT_EXECUTION_POLICIES, False),
        ("JavaScript", DEFAULT_EXECUTION_POLICIES, False),
        ("py", {**DEFAULT_EXECUTION_POLICIES, "python": False}, False),  # canonical key applies to aliases
        ("PYTHON", {**DEFAULT_EXECUTION_POLICIES, "python": False}, False),
        ("shell", {**DEFAULT_EXECUTION_POLICIES, "shell": False}, False),  # key as written
        ("python", {}, False),  # no policy for the language: saved only, as in the seed
        ("css", {}, False),
        ("python", {**DEFAULT_EXECUTION_POLICIES, "py": False}, False),  # a False under an alias
        ("python", {**DEFAULT_EXECUTION_POLICIES, "Python": False}, False),
        ("sh", {**DEFAULT_EXECUTION_POLICIES, "shell": False}, False),
        ("shell", {**DEFAULT_EXECUTION_POLICIES, "sh": False}, False),
        ("bash", {**DEFAULT_EXECUTION_POLICIES, "sh": False}, True),  # bash is its own language
        ("pwsh", {**DEFAULT_EXECUTION_POLICIES, "powershell": False}, False),
        ("python3", DEFAULT_EXECUTION_POLICIES, True),  # our alias finds the canonical key
        ("javascript", {**DEFAULT_EXECUTION_POLICIES, "javascript": True}, False),  # no runner: saved
    ],
)
def test_should_execute(name: str, policies: dict[str, bool], expected: bool) -> None:
    assert should_execute(name, policies) is expected


# -- file-name hints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_line", "expected"),
    [
        ("# filename: app.py", "app.py"),
        ("# app.py", "app.py"),
        ("#filename:app.py", "app.py"),
        ("# filename: pkg/mod/app.py", "pkg/mod/app.py"),
        ("// filename: index.js", "index.js"),
        ("// index.js", "index.js"),
        ("/* filename: style.css */", "style.css"),
        ("/* style.css */", "style.css"),
        ("<!-- filename: page.html -->", "page.html"),
        ("<!-- page.html -->", "page.html"),
        ("  # filename: indented.py  ", "indented.py"),
        ("# filename: my notes.txt", "my notes.txt"),  # with filename: the name is taken as written
        ("# filename: app.py\r", "app.py"),
    ],
)
def test_filename_hints(first_line: str, expected: str) -> None:
    assert filename_hint(first_line + "\nprint(1)\n") == expected


@pytest.mark.parametrize(
    "first_line",
    [
        "# compute primes",
        "# TODO: fix this",
        "#!/usr/bin/env python3",
        "// loop over the items",
        "/* helper functions */",
        "<!-- main page -->",
        "print('# filename: x.py')",
        "",
        "x = 1  # filename: y.py",
    ],
)
def test_ordinary_first_lines_are_not_names(first_line: str) -> None:
    assert filename_hint(first_line + "\nprint(1)\n") is None


def test_only_the_first_line_counts() -> None:
    assert filename_hint("print(1)\n# filename: late.py\n") is None


# -- path confinement ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("a.py", "a.py"),
        ("./a/b", "a/b"),
        ("a//b.py", "a/b.py"),
        ("a/./b.py", "a/b.py"),
        ("données/ファイル.py", "données/ファイル.py"),
        ("with space.py", "with space.py"),
        (".hidden", ".hidden"),
        ("a..b.py", "a..b.py"),
    ],
)
def test_valid_relative_paths(path: str, normalised: str) -> None:
    assert validate_relative_path(path) == normalised


@pytest.mark.parametrize(
    "path",
    [
        "../../x",
        "../x",
        "a/../../x",
        "a/../b",
        "..",
        "/abs",
        "/etc/passwd",
        "~/x",
        "a\x00b",
        "a\nb",
        "a\rb",
        "",
        "   ",
        ".",
        "./",
        " a.py",
        "a.py ",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafePathError):
        validate_relative_path(path)


def test_unsafe_path_error_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        validate_relative_path("/abs")


# -- file names -------------------------------------------------------------------------------------------------


def test_code_filename_is_md5_named_without_hint() -> None:
    code = "print('hello')\n"
    python = LANGUAGES["python"]
    assert code_filename(code, python) == f"tmp_code_{hashlib.md5(code.encode()).hexdigest()}.py"
    assert code_filename(code, LANGUAGES["bash"]).endswith(".sh")
    assert code_filename(code, LANGUAGES["pwsh"]).endswith(".ps1")
    assert code_filename(code + " ", python) != code_filename(code, python)


def test_code_filename_uses_the_hint_normalised() -> None:
    assert code_filename("# filename: ./src/app.py\nprint(1)\n", LANGUAGES["python"]) == "src/app.py"


def test_code_filename_refuses_an_escaping_hint() -> None:
    with pytest.raises(UnsafePathError):
        code_filename("# filename: ../../etc/cron.d/x.py\n", LANGUAGES["python"])
    with pytest.raises(UnsafePathError):
        code_filename("# filename: /etc/passwd.py\n", LANGUAGES["python"])


# -- pip -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("pip install numpy", "pip install -qqq numpy"),
        ("pip3 install numpy pandas", "pip3 install -qqq numpy pandas"),
        ("python -m pip install numpy", "python -m pip install -qqq numpy"),
        ("python3 -m pip install -r req.txt", "python3 -m pip install -qqq -r req.txt"),
        ("echo hi\n  pip install x\nls", "echo hi\n  pip install -qqq x\nls"),
        ("pip install -q numpy", "pip install -q numpy"),
        ("pip install numpy -qq", "pip install numpy -qq"),
        ("echo pip install x", "echo pip install x"),
        ("pip list", "pip list"),
    ],
)
def test_quiet_pip(code: str, expected: str) -> None:
    assert quiet_pip(code) == expected


# -- the seed's names: policy keys, file names, pip quietening ------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("py", "python"), ("Python", "python"), ("js", "javascript"), ("shell", "shell"), ("SH", "sh"),
     ("bash", "bash"), ("ps1", "ps1"), ("powershell", "powershell"), ("python3", "python"), ("console", "sh")],
)  # fmt: skip
def test_seed_language(name: str, expected: str) -> None:
    assert seed_language(name) == expected


def test_code_filename_with_the_block_language_is_the_seeds() -> None:
    code = "echo hi\n"
    digest = hashlib.md5(code.encode()).hexdigest()
    assert code_filename(code, LANGUAGES["python"], "py") == f"tmp_code_{digest}.python"
    assert code_filename(code, LANGUAGES["sh"], "shell") == f"tmp_code_{digest}.shell"
    assert code_filename(code, LANGUAGES["sh"], "sh") == f"tmp_code_{digest}.sh"
    assert code_filename(code, LANGUAGES["bash"], "Bash") == f"tmp_code_{digest}.bash"
    assert code_filename(code, LANGUAGES["javascript"], "js") == f"tmp_code_{digest}.javascript"
    assert code_filename(code, LANGUAGES["pwsh"], "powershell") == f"tmp_code_{digest}.ps1"


@pytest.mark.parametrize(
    ("hint", "expected"),
    [("a.py", "a.py"), ("/workspace/a.py", "a.py"), ("/workspace/sub/../b.py", "b.py"),
     ("./src/../src/app.py", "src/app.py")],
)  # fmt: skip
def test_workspace_relative_accepts_what_stays_inside(hint: str, expected: str) -> None:
    assert workspace_relative(hint, "/workspace") == expected


@pytest.mark.parametrize(
    "hint", ["../x.py", "a/../../x.py", "/etc/x.py", "/workspacex/a.py", "/workspace", "~/x.py", "a\x00.py"]
)
def test_workspace_relative_refuses_what_leaves(hint: str) -> None:
    with pytest.raises(UnsafePathError):
        workspace_relative(hint, "/workspace")


@pytest.mark.parametrize(
    ("code", "language", "expected"),
    [
        ("pip install numpy", "sh", "pip install -qqq numpy"),
        ("pip install numpy", "shell", "pip install -qqq numpy"),
        ("pip install numpy", "bash", "pip install -qqq numpy"),
        ("pip install -q numpy", "sh", "pip install -qqq -q numpy"),  # the seed's rule exactly
        ("pip install -qqq numpy", "sh", "pip install -qqq numpy"),
        ("  pip install numpy", "sh", "  pip install numpy"),  # only at the line start
        ("!pip install numpy\nprint(1)", "py", "!pip install -qqq numpy\nprint(1)"),
        ("! pip install numpy", "python", "! pip install -qqq numpy"),
        ("pip install numpy", "python", "pip install numpy"),
        ("pip install numpy", "html", "pip install numpy"),
    ],
)
def test_silence_pip_is_the_seeds(code: str, language: str, expected: str) -> None:
    assert silence_pip(code, language) == expected


def test_block_file_is_where_the_executor_writes_the_block() -> None:
    # The md5 is of the quietened code, as the seed names its files; the extension is its language.
    quiet = silence_pip("pip install rich", "sh")
    assert quiet != "pip install rich"
    assert (
        block_file("pip install rich", "sh", "/w")
        == f"/w/tmp_code_{hashlib.md5(quiet.encode()).hexdigest()}.sh"
    )
    assert block_file("# filename: a/b.py\nprint(1)", "python", "/w") == "/w/a/b.py"
    # What the executor would refuse has no file.
    assert block_file("print(1)", "cobol") is None
    assert block_file("# filename: ../x.py\nprint(1)", "python") is None
