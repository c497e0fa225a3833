"""protocol.py: request encoding, the completion-marker filter, the output budget."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from kx_fakes import Collected, exit_marker, parse_request, run_sh_locally, runner_stdout, start_marker

from kubectl_executor._exec.protocol import (
    LAUNCH,
    LOADER,
    RUN_PY_CACHE,
    RUN_SCRIPT,
    MarkerFilter,
    Outcome,
    OutputBudget,
    RunRequest,
    exec_args,
    kill_args,
    new_nonce,
)
from kubectl_executor.errors import InvalidInputError

NONCE = "0123456789abcdef01234567"

# -- RunRequest -----------------------------------------------------------------------------------------------


def test_encode_header_layout() -> None:
    request = RunRequest(
        code=b"print('hi')\n",
        work_dir="/workspace",
        path="src/app.py",
        runner="python",
        timeout=60,
        kill_after=2.5,
        budget=4096,
        env={"A": "1", "B": "x y=z"},
        nonce=NONCE,
    )
    assert request.encode() == (
        f"KX1 {NONCE} 60 2.5 python 4096 2\n/workspace\nsrc/app.py\nA=1\nB=x y=z\nprint('hi')\n".encode()
    )


def test_encode_save_only_and_no_env() -> None:
    request = RunRequest(code=b"<p>", work_dir="/w", path="p.html", runner=None, timeout=0.25, nonce=NONCE)
    head = request.encode().split(b"\n", 1)[0]
    assert head == f"KX1 {NONCE} 0.25 2 none {4 * 1024 * 1024} 0".encode()


def test_encode_keeps_code_bytes_exactly() -> None:
    code = b"a\n\nEOF\n$HOME `id` \x00\xff\r\nno newline at end"
    parsed = parse_request(RunRequest(code=code, work_dir="/w", path="a", runner="sh", timeout=1).encode())
    assert parsed.code == code


@pytest.mark.parametrize(
    "env",
    [{"1A": "x"}, {"A B": "x"}, {"A=B": "x"}, {"": "x"}, {"A": "line\nbreak"}, {"A": "nul\x00"}],
)
def test_encode_validates_env(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError):
        RunRequest(code=b"", work_dir="/w", path="a.py", runner="python", timeout=1, env=env).encode()


@pytest.mark.parametrize(("work_dir", "path"), [("/w", "a\nb.py"), ("/w\n/x", "a.py"), ("/w", "a\x00.py")])
def test_encode_refuses_line_breaks_in_paths(work_dir: str, path: str) -> None:
    with pytest.raises(InvalidInputError):
        RunRequest(code=b"", work_dir=work_dir, path=path, runner="python", timeout=1).encode()


def test_nonces_are_random_hex() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == 24 and int(n, 16) >= 0 for n in nonces)


def test_exec_args_carry_only_the_fixed_scripts_and_the_nonce() -> None:
    assert exec_args("kx-1", "executor", NONCE) == [
        "exec",
        "-i",
        "kx-1",
        "-c",
        "executor",
        "--",
        "sh",
        "-c",
        LAUNCH,
        "kx",
        NONCE,
        LOADER,
        RUN_SCRIPT,
    ]
    with pytest.raises(InvalidInputError):
        exec_args("kx-1", "executor", "$(reboot)")


def test_kill_args_refuse_a_non_hex_nonce() -> None:
    args = kill_args("kx-1", "executor", NONCE, "/workspace")
    assert args[-2:] == [NONCE, "/workspace"]
    assert "/tmp/kx-logs" in args[-4] and ".kx-logs" in args[-4]
    with pytest.raises(InvalidInputError):
        kill_args("kx-1", "executor", "abc; rm -rf /", "/workspace")


# -- MarkerFilter ----------------------------------------------------------------------------------------------


def filtered(chunks: list[bytes], nonce: str = NONCE) -> tuple[bytes, Outcome | None, MarkerFilter]:
    out = Collected()
    f = MarkerFilter(nonce, out)
    for chunk in chunks:
        f.feed(chunk)
    outcome = f.close()
    return out.value, outcome, f


def test_marker_removed_and_outcome_read() -> None:
    data = runner_stdout(NONCE, b"hello\nworld\n", rc=3, timed_out=0, kept=1)
    out, outcome, f = filtered([data])
    assert out == b"hello\nworld\n"
    assert outcome == Outcome(exit_code=3, timed_out=False, log_kept=True)
    assert f.started


@pytest.mark.parametrize(
    "program_out", [b"", b"x", b"no trailing newline", b"line\n", b"a\n\n", b"\n", b"y" * 500]
)
def test_marker_split_at_every_position(program_out: bytes) -> None:
    data = runner_stdout(NONCE, program_out, rc=124, timed_out=1)
    for i in range(len(data) + 1):
        out, outcome, _ = filtered([data[:i], data[i:]])
        assert out == program_out, i
        assert outcome == Outcome(124, True, False), i


def test_marker_fed_byte_by_byte() -> None:
    program_out = b"partial line without newline"
    data = runner_stdout(NONCE, program_out, rc=255)
    out, outcome, _ = filtered([data[i : i + 1] for i in range(len(data))])
    assert out == program_out
    assert outcome is not None and outcome.exit_code == 255


def test_output_streams_before_the_end() -> None:
    """Everything but a small tail is handed over as it arrives, not at close()."""
    out = Collected()
    f = MarkerFilter(NONCE, out)
    f.feed(start_marker(NONCE))
    f.feed(b"z" * 10_000)
    assert len(out.value) >= 10_000 - 200


def test_fake_marker_with_another_nonce_is_user_output() -> None:
    other = "ffffffffffffffffffffffff"
    program_out = b"look:" + exit_marker(other, 0) + b"still mine\n" + exit_marker(other, 0)
    data = runner_stdout(NONCE, program_out, rc=1)
    out, outcome, _ = filtered([data])
    assert out == program_out
    assert outcome == Outcome(1, False, False)


def test_start_marker_text_inside_output_is_kept() -> None:
    program_out = start_marker(NONCE) + b"echoed\n"
    out, outcome, _ = filtered([runner_stdout(NONCE, program_out, rc=0)])
    assert out == program_out
    assert outcome is not None


def test_no_exit_marker_means_no_outcome() -> None:
    data = start_marker(NONCE) + b"output, then the stream was cut"
    out, outcome, f = filtered([data])
    assert outcome is None
    assert f.started
    assert out == b"output, then the stream was cut"


def test_exit_marker_not_at_the_end_is_not_trusted() -> None:
    data = runner_stdout(NONCE, b"x", rc=0) + b"trailing garbage"
    _, outcome, _ = filtered([data])
    assert outcome is None


def test_exit_marker_without_start_is_not_trusted() -> None:
    _, outcome, f = filtered([b"something" + exit_marker(NONCE, 0)])
    assert outcome is None and not f.started


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"sh: 1: cannot create /workspace: Permission denied\n",
        b"short",
        b"x" * 1000,
    ],
)
def test_non_runner_output_passes_through(text: bytes) -> None:
    out, outcome, f = filtered([text])
    assert out == text
    assert outcome is None
    assert not f.started


def test_non_runner_output_in_small_chunks_passes_through() -> None:
    text = b"OCI runtime exec failed: exec failed: unable to start container process\n" * 3
    out, outcome, _ = filtered([text[i : i + 5] for i in range(0, len(text), 5)])
    assert out == text and outcome is None


# -- OutputBudget ---------------------------------------------------------------------------------------------


def test_budget_under_limit_keeps_everything() -> None:
    b = OutputBudget(100)
    b(b"a" * 30)
    b(b"b" * 30)
    assert b.value() == b"a" * 30 + b"b" * 30
    assert not b.truncated
    assert b.total == 60


def test_budget_at_limit_keeps_everything() -> None:
    b = OutputBudget(100)
    data = bytes(range(100))
    for i in range(0, 100, 7):
        b(data[i : i + 7])
    assert b.value() == data
    assert not b.truncated


def test_budget_over_limit_keeps_head_and_tail() -> None:
    b = OutputBudget(100)
    data = b"H" * 50 + b"M" * 1000 + b"T" * 50
    for i in range(0, len(data), 33):
        b(data[i : i + 33])
    assert b.truncated
    value = b.value("full output in the pod at /tmp/kx-logs/x.*")
    assert value.startswith(
        b"H" * 50 + b"\n[... 1000 bytes omitted; full output in the pod at /tmp/kx-logs/x.* ...]\n"
    )
    assert value.endswith(b"T" * 50)
    assert b"M" not in value


def test_budget_one_byte_over() -> None:
    b = OutputBudget(10)
    b(b"0123456789X")
    assert b.truncated
    assert b.value() == b"01234\n[... 1 bytes omitted ...]\n6789X"


def test_budget_odd_limit_splits_exactly() -> None:
    b = OutputBudget(7)
    b(b"abcdefghijklmnop")
    value = b.value()
    assert value.startswith(b"abcd\n[... 9 bytes omitted")
    assert value.endswith(b"nop")


def test_budget_memory_stays_bounded_for_50_mb() -> None:
    limit = 64 * 1024
    chunk = b"q" * (64 * 1024)
    b = OutputBudget(limit)
    tracemalloc.start()
    try:
        for _ in range(800):  # 50 MiB
            b(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b.total == 800 * len(chunk)
    assert peak < 1024 * 1024, peak
    value = b.value()
    assert len(value) < limit + 200
    assert f"{800 * len(chunk) - limit} bytes omitted".encode() in value


# -- the launcher's compiled-runner cache ---------------------------------------------------------------------


def test_a_damaged_runner_cache_is_compiled_again(tmp_path: Path) -> None:
    """The first run in a pod keeps run.py's code object; a file that is not one is ignored and
    replaced, never executed as the runner."""
    import marshal
    import subprocess

    tag = subprocess.run(
        ["python3", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cache = Path(RUN_PY_CACHE + tag)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(marshal.dumps(("not", "code")))
    request = RunRequest(b"print(6 * 7)\n", str(tmp_path), "b.py", "python", 30)
    done = run_sh_locally(request.encode(), runner="run.py")
    assert done.stdout.startswith(f"__KX_START_{request.nonce}__\n42\n".encode()), done
    assert type(marshal.loads(cache.read_bytes())).__name__ == "code"
    again = RunRequest(b"print(6 * 8)\n", str(tmp_path), "b.py", "python", 30)
    assert b"\n48\n" in run_sh_locally(again.encode(), runner="run.py").stdout  # from the cache


def test_the_exec_url_stays_under_8_kib() -> None:
    """kubectl puts the command in the exec URL's query; proxies (and the emulator's server) refuse
    request lines over 8 KiB. run.py travels on stdin for this reason."""
    from urllib.parse import urlencode

    args = exec_args("kx-" + "a" * 53, "executor", NONCE)
    command = args[args.index("--") + 1 :]
    path = f"/api/v1/namespaces/{'n' * 63}/pods/{args[2]}/exec?"
    query = urlencode([("command", c) for c in command] + [("container", "executor"), ("stdin", "true")])
    assert len(path + query) < 8190
