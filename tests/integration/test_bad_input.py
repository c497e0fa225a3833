"""Bad input through the real kubectl: each gets a clear error or a correct result, and nothing
outside work_dir is touched (a fingerprint of the pod's other writable places is compared).

Inputs tried: file-name hints and upload paths with ``..``, absolute paths, NUL, CR/LF, ``~``,
unicode, shell metacharacters; code with ``$HOME``, backticks, heredoc ``EOF`` lines; 10 MB of
code; binary and non-UTF-8 output; 50 MB of output (budget and client memory); programs reading
stdin; invalid pod names, namespaces, labels, env vars, work_dir; timeouts below one second;
unknown languages; malformed tool-call arguments, function and module names.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import (
    CodeBlock,
    InvalidInputError,
    KubernetesCommandLineCodeExecutor,
    UnsafePathError,
)

pytestmark = pytest.mark.integration

# Everything writable in the pod besides work_dir, listed by name and size (not times: the
# runner's own log directory comes and goes in /tmp, so it is left out).
FINGERPRINT = r"""
ls -A /
ls -A "$(dirname "$PWD")"
find /tmp "$HOME" -xdev \( -path /tmp/kx-logs -o -path '/tmp/kx-dl-*' \) -prune -o -printf '%p %s\n' | sort
ls -A /abs /x.py /etc/evil /tmp/evil.txt 2>/dev/null || true
"""


def fingerprint(ex: KubernetesCommandLineCodeExecutor) -> str:
    result = ex.execute_code_blocks([CodeBlock(FINGERPRINT, "sh")])
    assert result.exit_code == 0, result.output
    return result.stdout


def in_pod(ex: KubernetesCommandLineCodeExecutor, code: str) -> str:
    result = ex.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 0, result.output
    return result.stdout


def sha256_in_pod(ex: KubernetesCommandLineCodeExecutor, path: str) -> str:
    code = f"import hashlib\nprint(hashlib.sha256(open({path!r}, 'rb').read()).hexdigest())"
    return in_pod(ex, code).strip()


@pytest.fixture(scope="module")
def shared(cluster: Cluster) -> Any:
    """One pod for the read-mostly cases of this module (each case checks its own effects)."""
    ex = KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs(), timeout=30)
    yield ex
    ex.stop()


# -- file names: code-block hints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../x.py", "../x.py", "/abs/x.py", "/x.py", "a/../../x.py", "~/x.py", "a\x00b.py", "a\rb.py", "."],
    ids=["dotdot2", "dotdot", "abs-dir", "abs", "inner-dotdot", "tilde", "nul", "cr", "dot"],
)
def test_escaping_hint_is_refused_and_nothing_written(
    shared: KubernetesCommandLineCodeExecutor, name: str
) -> None:
    before = fingerprint(shared)
    result = shared.execute_code_blocks([CodeBlock(f"# filename: {name}\nprint('pwned')", "python")])
    assert result.exit_code == 1
    assert result.output.startswith("Filename is not in the workspace: ") and "pwned" not in result.output
    assert fingerprint(shared) == before


@pytest.mark.parametrize(
    "name",
    ["données/ñ 1.py", "$HOME.py", "`id`.py", "-rf.py", "a'b\"c.py", "x;rm -rf ~.py", "日本/語.py"],
    ids=["unicode-space", "dollar", "backticks", "dash", "quotes", "semicolon", "cjk"],
)
def test_odd_but_safe_hint_is_used_literally(shared: KubernetesCommandLineCodeExecutor, name: str) -> None:
    before = fingerprint(shared)
    result = shared.execute_code_blocks([CodeBlock(f"# filename: {name}\nprint(__file__)", "python")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{shared.work_dir}/{name}\n"
    assert result.code_file == f"{shared.work_dir}/{name}"
    assert fingerprint(shared) == before


# -- file names: uploads ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../x", "/abs/x", "/tmp/evil.txt", "a/../../b", "a\x00b", "a\nb", "a\rb", "", " ", "~/x", "."],
)
def test_escaping_upload_is_refused_before_anything_is_written(
    shared: KubernetesCommandLineCodeExecutor, cluster: Cluster, name: str
) -> None:
    before = fingerprint(shared)
    work = in_pod(shared, "import os\nprint(sorted(os.listdir('.')))")
    with pytest.raises(UnsafePathError):
        shared.upload_file_content(name, b"pwned")
    assert fingerprint(shared) == before
    assert in_pod(shared, "import os\nprint(sorted(os.listdir('.')))") == work


@pytest.mark.parametrize("name", ["ü/ñ 1.txt", "$HOME.txt", "`id`", "-rf", "a b/c'd\".txt", "日本.bin"])
def test_odd_upload_names_round_trip(
    shared: KubernetesCommandLineCodeExecutor, tmp_path: Path, name: str
) -> None:
    before = fingerprint(shared)
    data = name.encode() + bytes(range(256))
    assert shared.upload_file_content(name, data) == f"{shared.work_dir}/{name}"
    assert sha256_in_pod(shared, name) == hashlib.sha256(data).hexdigest()
    local = shared.download_file(name, tmp_path / "back")
    assert local.read_bytes() == data
    assert fingerprint(shared) == before


# -- code that breaks naive transports ------------------------------------------------------------------


def test_shell_metacharacters_in_code_travel_intact(shared: KubernetesCommandLineCodeExecutor) -> None:
    tricky = "$HOME `id -u` $(whoami) \\n '\"\nEOF\n'EOF'\n\x00\x1b[31m\n"
    py = f"# filename: meta.py\nS = {tricky!r}\nprint(len(S))\n"
    result = shared.execute_code_blocks([CodeBlock(py, "python")])
    assert result.stdout == f"{len(tricky)}\n"
    assert sha256_in_pod(shared, "meta.py") == hashlib.sha256(py.encode()).hexdigest()
    sh = "# filename: meta.sh\ncat <<'EOF'\n$HOME `id -u` $(whoami)\nEOF\necho \"$0\"\n"
    result = shared.execute_code_blocks([CodeBlock(sh, "sh")])
    assert result.stdout == f"$HOME `id -u` $(whoami)\n{shared.work_dir}/meta.sh\n"
    assert sha256_in_pod(shared, "meta.sh") == hashlib.sha256(sh.encode()).hexdigest()


def test_ten_megabytes_of_shell_code(shared: KubernetesCommandLineCodeExecutor) -> None:
    line = ": 'padding line with $HOME and `backticks` that must not run'\n"
    code = "# filename: big.sh\n" + line * (10 * 1024 * 1024 // len(line)) + "echo end\n"
    result = shared.execute_code_blocks([CodeBlock(code, "sh")])
    assert (result.exit_code, result.stdout) == (0, "end\n")
    assert sha256_in_pod(shared, "big.sh") == hashlib.sha256(code.encode()).hexdigest()


# -- output the client must survive ---------------------------------------------------------------------


def test_binary_and_non_utf8_output_on_both_streams(shared: KubernetesCommandLineCodeExecutor) -> None:
    raw_out = b"ok\xff\xfe\x00\x80\xc3(" + bytes(range(256))
    raw_err = b"\xe9t\xe9 \x00 latin-1\n"
    code = f"import sys\nsys.stdout.buffer.write({raw_out!r})\nsys.stderr.buffer.write({raw_err!r})\n"
    seen: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def on_output(stream: str, chunk: bytes) -> None:
        seen[stream] += chunk

    result = shared.execute_code_blocks([CodeBlock(code, "python")], on_output=on_output)
    assert result.exit_code == 0
    assert seen == {"stdout": raw_out, "stderr": raw_err}  # the callback gets the exact bytes
    assert result.stdout == raw_out.decode(errors="replace")
    assert result.stderr == raw_err.decode(errors="replace")


def test_fifty_megabytes_of_output_stay_within_budget_and_memory(
    cluster: Cluster, executor_factory: ExecutorFactory
) -> None:
    budget = 1024 * 1024
    ex = executor_factory(max_output_bytes=budget)
    code = "import sys\nchunk = b'z' * 65536\nfor _ in range(800):\n    sys.stdout.buffer.write(chunk)\nprint('END')"
    total = 800 * 65536 + 4
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        result = ex.execute_code_blocks([CodeBlock(code, "python")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert result.exit_code == 0 and result.truncated
    assert result.stdout.endswith("END\n") and f"{total - budget}" in result.stdout
    assert len(result.stdout) < budget + 1024
    assert peak < 8 * budget, f"client held {peak} bytes for {total} of output"
    assert rss_growth < 40 * 1024, f"max RSS grew by {rss_growth} KiB"
    log = next(p for p in result.log_files if p.endswith(".out"))
    size = ex.execute_code_blocks([CodeBlock(f"wc -c < {log}", "sh")])
    assert size.stdout.strip() == str(total)  # the full output is kept in the pod


@pytest.mark.parametrize(
    ("language", "code", "exit_code", "stdout"),
    [
        ("python", "print(repr(input()))", 1, ""),
        ("python", "import sys\nprint(repr(sys.stdin.read()))", 0, "''\n"),
        ("sh", "cat\necho after-cat", 0, "after-cat\n"),
        ("sh", "read line || echo eof", 0, "eof\n"),
    ],
    ids=["input", "read-all", "cat", "read"],
)
def test_programs_reading_stdin_see_eof_at_once(
    shared: KubernetesCommandLineCodeExecutor, language: str, code: str, exit_code: int, stdout: str
) -> None:
    result = shared.execute_code_blocks([CodeBlock(code, language)])
    assert not result.timed_out
    assert (result.exit_code, result.stdout) == (exit_code, stdout)
    if language == "python" and exit_code:
        assert "EOFError" in result.stderr


# -- options refused before touching the cluster --------------------------------------------------------


BAD_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("pod-name-upper", {"pod_name": "Bad_Name"}),
    ("pod-name-long", {"pod_name": "a" * 64}),
    ("pod-name-dash", {"pod_name": "-x"}),
    ("pod-name-dot", {"pod_name": "a.b"}),
    ("pod-name-flag", {"pod_name": "--all"}),
    ("namespace-space", {"namespace": "team a"}),
    ("namespace-long", {"namespace": "n" * 64}),
    ("namespace-empty", {"namespace": ""}),
    ("label-value-long", {"labels": {"team": "v" * 64}}),
    ("label-value-space", {"labels": {"team": "a b"}}),
    ("label-key", {"labels": {"bad key": "v"}}),
    ("label-ours", {"labels": {"kubectl-executor.io/session": "x"}}),
    ("env-name", {"env_vars": [{"key": "1X", "value": "v"}]}),
    ("env-name-dash", {"env_vars": [{"key": "A-B", "value": "v"}]}),
    ("env-value-newline", {"env_vars": [{"key": "A", "value": "a\nexport B=1"}]}),
    ("env-value-nul", {"env_vars": [{"key": "A", "value": "a\x00"}]}),
    ("env-shape", {"env_vars": [{"name": "A"}]}),
    ("work-dir-relative", {"work_dir": "workspace"}),
    ("work-dir-dotdot", {"work_dir": "/workspace/../etc"}),
    ("timeout-0", {"timeout": 0}),
    ("timeout-half", {"timeout": 0.5}),
    ("timeout-negative", {"timeout": -1}),
    ("timeout-string", {"timeout": "10"}),
    ("output-budget", {"max_output_bytes": 10}),
    ("startup-timeout", {"startup_timeout": 0}),
]


@pytest.mark.parametrize("options", [o for _, o in BAD_OPTIONS], ids=[i for i, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_the_cluster(cluster: Cluster, options: dict[str, Any]) -> None:
    requests = len(cluster.emulator.stats.requests()) if cluster.emulator is not None else None
    with pytest.raises(InvalidInputError) as info:
        KubernetesCommandLineCodeExecutor(**{**cluster.executor_kwargs(), **options})
    assert str(info.value)
    if requests is not None:
        assert len(cluster.emulator.stats.requests()) == requests  # not one API request


def test_nan_timeout_is_refused(cluster: Cluster) -> None:
    with pytest.raises(InvalidInputError):
        ex = KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs(), timeout=math.nan, start=False)
        ex.stop()


# -- languages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ruby", "", "python; rm -rf /", "../sh", "py thon", "\x00"])
def test_unknown_language_is_exit_1_without_running(
    shared: KubernetesCommandLineCodeExecutor, cluster: Cluster, language: str
) -> None:
    execs = cluster.emulator.exec_count(shared.pod_name, cluster.namespace) if cluster.emulator else 0
    result = shared.execute_code_blocks([CodeBlock("print('ran')", language)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Unsupported language {language.strip().lower()} (runs python, bash")
    assert "ran" not in result.stdout
    if cluster.emulator is not None:
        assert cluster.emulator.exec_count(shared.pod_name, cluster.namespace) == execs


@pytest.mark.parametrize("language", ["PYTHON", " Python ", "py", "python3"])
def test_language_names_are_forgiving(shared: KubernetesCommandLineCodeExecutor, language: str) -> None:
    assert shared.execute_code_blocks([CodeBlock("print('ran')", language)]).stdout == "ran\n"


# -- tool calls -------------------------------------------------------------------------------------------

TOOL_MODULE = "def add(a, b):\n    return a + b\n\ndef echo(**kw):\n    return kw\n"


@pytest.fixture(scope="module")
def tools(shared: KubernetesCommandLineCodeExecutor) -> KubernetesCommandLineCodeExecutor:
    shared.upload_file_content("kx_bad_tools.py", TOOL_MODULE)
    shared.install_pod_dispatcher(default_module="kx_bad_tools")
    return shared


@pytest.mark.parametrize(
    ("arguments", "func", "module", "error"),
    [
        ("{not json", "add", None, ValueError),
        ('{"a": 1,}', "add", None, ValueError),
        ("[1, 2]", "add", None, TypeError),
        ('"just a string"', "add", None, TypeError),
        (42, "add", None, TypeError),
        (None, "add", None, TypeError),
        ({"a": object()}, "add", None, TypeError),
        ({1: 2}, "add", None, TypeError),
        ({"a": 1, "b": 2}, "os.system", None, InvalidInputError),
        ({"a": 1, "b": 2}, "__import__('os')", None, InvalidInputError),
        ({"a": 1, "b": 2}, "add; rm", None, InvalidInputError),
        ({"a": 1, "b": 2}, "add", "../evil", InvalidInputError),
        ({"a": 1, "b": 2}, "add", "kx_bad_tools; rm", InvalidInputError),
        ({"a": 1, "b": 2}, "add", "/abs/mod", InvalidInputError),
    ],
)
def test_malformed_tool_calls_are_refused_before_the_pod(
    tools: KubernetesCommandLineCodeExecutor,
    cluster: Cluster,
    arguments: Any,
    func: str,
    module: str | None,
    error: type,
) -> None:
    execs = cluster.emulator.exec_count(tools.pod_name, cluster.namespace) if cluster.emulator else 0
    with pytest.raises(error):
        tools.execute_tool_function(arguments, func, module=module)
    if cluster.emulator is not None:
        assert cluster.emulator.exec_count(tools.pod_name, cluster.namespace) == execs


def test_tool_call_errors_in_the_pod_are_results(tools: KubernetesCommandLineCodeExecutor) -> None:
    missing = tools.execute_tool_function('{"a": 1}', "add")  # b missing: the function raises
    assert missing.exit_code != 0 and missing.tool_result is not None and not missing.tool_result.ok
    assert "TypeError" in missing.output
    absent = tools.execute_tool_function({}, "no_such_function")
    assert absent.exit_code != 0 and absent.tool_result is not None and not absent.tool_result.ok
    odd = {"text": "ü \x00 $HOME `id` \n EOF", "n": 1.5, "nested": {"l": [1, None, True]}}
    echoed = tools.execute_tool_function(json.dumps(odd), "echo")
    assert echoed.exit_code == 0 and echoed.tool_result is not None
    assert echoed.tool_result.value == odd
