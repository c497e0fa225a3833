"""klog.KlogFilter: kubectl's own log lines out of an exec's stderr, the program's output intact."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kx_fakes import FakeRunner, reply_with

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor._cluster.klog import KlogFilter

KLOG = b"E1203 09:12:01.123456   4242 websocket.go:296] Unknown stream id 1, discarding message\n"


def filtered(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    seen: list[bytes] = []
    f = KlogFilter(seen.append)
    for chunk in chunks:
        f.feed(chunk)
    f.close()
    return b"".join(seen), seen


def test_a_klog_line_goes_and_the_rest_stays() -> None:
    out, _ = filtered([b"Traceback: boom\n" + KLOG + b"after\n"])
    assert out == b"Traceback: boom\nafter\n"


def test_a_klog_line_between_two_chunks_of_a_line_goes() -> None:
    # kubectl writes its line in one piece, but the remote stream's line may be cut around it.
    out, _ = filtered([b"half a li", KLOG, b"ne\n"])
    assert out == b"half a line\n"


@pytest.mark.parametrize("cut", [1, 5, 20, 40, len(KLOG) - 1])
def test_a_klog_line_split_across_reads_goes(cut: int) -> None:
    out, _ = filtered([b"x\n" + KLOG[:cut], KLOG[cut:] + b"y\n"])
    assert out == b"x\ny\n"


def test_output_that_cannot_be_a_log_line_is_not_held_back() -> None:
    seen: list[bytes] = []
    f = KlogFilter(seen.append)
    f.feed(b"progress 10% ERROR E")
    # Only the trailing "E" could still start a log line.
    assert seen == [b"progress 10% ERROR "]
    f.feed(b"nd\n")
    assert b"".join(seen) == b"progress 10% ERROR End\n"


@pytest.mark.parametrize(
    "line",
    [
        b"E1203 not a timestamp websocket.go:296] x\n",
        b"I1203 09:12:01.123456   4242 main.py:3] a python file is not kubectl's\n",
        b"W1203 09:12:01.1234   4242 x.go:1] too few microsecond digits\n",
    ],
)
def test_lines_that_only_look_alike_stay(line: bytes) -> None:
    out, _ = filtered([line])
    assert out == line


def test_a_partial_header_at_the_end_of_the_stream_is_the_programs() -> None:
    out, _ = filtered([b"E1203 09:12"])
    assert out == b"E1203 09:12"


def test_a_long_unterminated_tail_is_not_held_forever() -> None:
    seen: list[bytes] = []
    f = KlogFilter(seen.append)
    f.feed(KLOG[:-1] + b"y" * 5000)  # a header and 5000 bytes without a newline
    assert b"".join(seen).startswith(KLOG[:40])


def test_the_executor_drops_kubectls_log_line_from_a_blocks_stderr(
    make_executor: Callable[..., KubernetesCommandLineCodeExecutor], fake_runner: FakeRunner
) -> None:
    ex = make_executor()
    fake_runner.exec_replies.append(reply_with(b"42\n", 1, stderr=b"boom\n" + KLOG))
    seen: list[tuple[str, bytes]] = []

    result = ex.run("print(42)", "python", on_output=lambda s, b: seen.append((s, b)))

    assert (result.exit_code, result.stderr) == (1, "boom\n")
    assert b"".join(b for s, b in seen if s == "stderr") == b"boom\n"
