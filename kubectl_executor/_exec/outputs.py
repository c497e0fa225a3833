"""Rich results: the in-pod report (``_pod/rich.py``) parsed into the public types.

The report is JSON: ``outputs`` (mime_type, data: base64 when ``b64``, metadata, kept_path),
``files`` (path, size, sha256) and ``files_truncated``. A malformed report loses the rich results,
never the block's outcome: it is logged and read as empty.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..boundary import ChangedFile, RichOutput

logger = logging.getLogger(__name__)

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/svg+xml": ".svg",
    "text/html": ".html",
    "text/markdown": ".md",
    "application/json": ".json",
    "text/latex": ".tex",
    "text/plain": ".txt",
}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RichResults:
    """What one block (or several, joined) produced besides its streams."""

    outputs: tuple[RichOutput, ...] = ()
    files: tuple[ChangedFile, ...] = ()
    files_truncated: bool = False

    def __add__(self, other: RichResults) -> RichResults:
        """A later block's results after an earlier one's; a file changed twice is listed once, as it is now."""
        files = {f.path: f for f in self.files}
        files.update({f.path: f for f in other.files})
        return RichResults(
            self.outputs + other.outputs,
            tuple(sorted(files.values(), key=lambda f: f.path)),
            self.files_truncated or other.files_truncated,
        )


EMPTY = RichResults()


def parse_report(data: bytes | None) -> RichResults:
    """The in-pod report as public types; None or a malformed report: nothing."""
    if not data:
        return EMPTY
    from ..boundary import ChangedFile, RichOutput  # pydantic: loaded on first use

    try:
        report = json.loads(data)
        outputs = []
        for item in report.get("outputs", ()):
            raw = str(item.get("data") or "")
            value: bytes | str = base64.b64decode(raw, validate=True) if item.get("b64") else raw
            metadata: dict[str, Any] = dict(item.get("metadata") or {})
            if item.get("kept_path") is not None or "size" in item:
                metadata.setdefault("size", item.get("size"))
            outputs.append(
                RichOutput(
                    mime_type=str(item["mime_type"]),
                    data=value,
                    metadata=metadata,
                    kept_path=item.get("kept_path"),
                )
            )
        files = tuple(
            ChangedFile(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]))
            for f in report.get("files", ())
        )
        return RichResults(tuple(outputs), files, bool(report.get("files_truncated")))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        logger.warning("ignoring a malformed rich-results report: %s", exc)
        return EMPTY


def output_filename(index: int, output: RichOutput) -> str:
    """A safe file name for an output: ``output-<n>.<ext>``, no directory part, never hidden."""
    ext = EXTENSIONS.get(output.mime_type) or "." + (_SAFE.sub("-", output.mime_type.split("/")[-1]) or "bin")
    return f"output-{index}{ext[:16]}"


def output_json(output: RichOutput) -> dict[str, Any]:
    """An output as JSON: binary data base64 (``encoding`` says so)."""
    binary = isinstance(output.data, bytes)
    data = base64.b64encode(output.data).decode() if isinstance(output.data, bytes) else output.data
    return {
        "mime_type": output.mime_type,
        "encoding": "base64" if binary else "utf-8",
        "data": data,
        "metadata": output.metadata,
        "kept_path": output.kept_path,
    }
