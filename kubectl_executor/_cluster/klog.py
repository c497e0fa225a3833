"""kubectl's own log lines, taken out of an exec's stderr.

kubectl writes the remote program's stderr and its own klog lines to the same stderr. Some
kubectl versions log harmless noise there at the end of an exec (kubectl 1.32 on a real cluster:
``E1203 09:12:01.123456   4242 websocket.go:296] Unknown stream id 1, discarding message``), which
then read as if the user's program had printed them. A klog header (severity, date, time to the
microsecond, pid, ``file.go:line]``) is distinctive enough to match anywhere, also mid-line: the
line is written in one piece, but may land between two chunks of the remote stream.
"""

from __future__ import annotations

import logging
import re

from .runner import Sink

logger = logging.getLogger(__name__)

# One klog line: severity, MMDD, time, pid, the Go source file and line, the message.
_HEADER_ATOMS = (
    rb"[IWEF]",
    *[rb"\d"] * 4,
    rb" ",
    rb"\d",
    rb"\d",
    rb":",
    rb"\d",
    rb"\d",
    rb":",
    rb"\d",
    rb"\d",
    rb"\.",
    *[rb"\d"] * 6,
    rb" +",
    rb"\d+",
    rb" ",
    rb"[\w./-]+",
    rb"\.",
    rb"g",
    rb"o",
    rb":",
    rb"\d+",
    rb"\]",
    rb" [^\n]*",
)
_LINE = re.compile(b"".join(_HEADER_ATOMS) + rb"\n")


def _partial(atoms: tuple[bytes, ...]) -> bytes:
    """A pattern for any non-empty prefix of the atoms in sequence: a(?:b(?:c)?)?"""
    pattern = atoms[-1]
    for atom in reversed(atoms[:-1]):
        pattern = atom + b"(?:" + pattern + b")?"
    return pattern


_TAIL = re.compile(_partial(_HEADER_ATOMS) + rb"\Z")


class KlogFilter:
    """Passes a stream on to ``sink`` without kubectl's klog lines (logged here at debug).

    Only a tail that could still become a klog line is held back (a few hundred bytes at most in
    practice), so output reaches the sink as it arrives."""

    _MAX_HOLD = 4096  # a "log line" longer than this is not kubectl's: let it through

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        data = self._drop_lines(self._pending + chunk)
        hold = self._held_tail(data)
        self._pending = data[len(data) - hold :] if hold else b""
        if len(data) > hold:
            self._sink(data[: len(data) - hold])

    def close(self) -> None:
        """End of stream: what is held back was not a log line after all."""
        data, self._pending = self._pending, b""
        if data:
            self._sink(data)

    @staticmethod
    def _drop_lines(data: bytes) -> bytes:
        def dropped(match: re.Match[bytes]) -> bytes:
            logger.debug("kubectl: %s", match.group(0).rstrip().decode(errors="replace"))
            return b""

        return _LINE.sub(dropped, data)

    def _held_tail(self, data: bytes) -> int:
        """How many trailing bytes of ``data`` could be the start of a klog line."""
        start = max(0, len(data) - self._MAX_HOLD)
        newline = data.rfind(b"\n", start)
        start = newline + 1 if newline != -1 else start
        for i in range(start, len(data)):
            if data[i] in b"IWEF" and _TAIL.match(data, i):
                return len(data) - i
        return 0
