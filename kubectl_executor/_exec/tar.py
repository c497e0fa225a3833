"""Tar for files into and out of the pod, pure (no kubectl, no processes): path confinement, the
upload stream with its per-file sums, and the safe extraction of a tar the client does not trust.

Download safety: every member is checked (no absolute names, no ``..``, no links, devices or
fifos, containment after normalising, size and count caps) while extracting into a fresh
directory next to the target (CVE-2018-1002100, CVE-2019-1002101, CVE-2019-11246,
CVE-2019-11249, CVE-2019-11251 came from trusting such tar). The kubectl side is
:mod:`~kubectl_executor._exec.transfer`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import stat
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any, BinaryIO, ClassVar, Protocol, cast

from ..errors import TransferError, UnsafePathError
from .languages import validate_relative_path

logger = logging.getLogger(__name__)


DEFAULT_EXCLUDES: tuple[str, ...] = ("__pycache__", ".*")
"""The seed's rule: skip ``__pycache__`` and names starting with "." (glob patterns, per component)."""


SUM_LIST = "kx.sha256"
CHUNK = 1 << 20
_TAR_BUFSIZE = 256 * 1024
_SUM_LINE = re.compile(rb"^__KX_SUM__ ([0-9a-f]{64}) (.+)$")


@dataclass(frozen=True)
class TransferLimits:
    """Caps on what a download may write locally; exceeding one raises :class:`TransferError`."""

    max_total_bytes: int = 2 * 1024**3
    max_members: int = 20_000
    max_header_bytes: int = 1 << 20  # one pax / GNU long-name header (tarfile reads it whole)

    def stream_cap(self) -> int:
        """Raw bytes we accept on the wire: the content plus generous per-member overhead."""
        return self.max_total_bytes + self.max_members * 4096 + 16 * self.max_header_bytes


# -- paths ------------------------------------------------------------------------------------


def pod_relative(path: str | PurePath, bases: Sequence[str], *, allow_root: bool = False) -> tuple[str, str]:
    """``(base, relative path)`` for a user-given pod path, or :class:`UnsafePathError`.

    Relative paths are relative to ``bases[0]`` (work_dir); an absolute path must lie under one of
    ``bases``. ``..``, NUL and line breaks are refused whatever the form. ``allow_root`` lets
    ``""``/``"."`` (or a base itself) name the base directory, returned as ``"."``.
    """
    text = path.as_posix() if isinstance(path, PurePath) else str(path)
    if "\x00" in text or "\n" in text or "\r" in text:
        raise UnsafePathError(f"path {text!r} contains NUL or a line break")
    pure = PurePosixPath(text)
    if ".." in pure.parts:
        raise UnsafePathError(f"path {text!r} escapes the workspace")
    if allow_root and text.strip() in ("", ".", "./"):
        return bases[0], "."
    if not pure.is_absolute():
        return bases[0], validate_relative_path(text)
    for base in bases:
        try:
            rel = pure.relative_to(base)
        except ValueError:
            continue
        if not rel.parts:
            if allow_root:
                return base, "."
            raise UnsafePathError(f"path {text!r} names the directory {base} itself")
        return base, validate_relative_path(rel.as_posix())
    raise UnsafePathError(f"path {text!r} is outside the workspace {bases[0]}")


def excluded(parts: Iterable[str], patterns: Sequence[str]) -> bool:
    """True when any path component matches any glob pattern."""
    return any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in patterns)


# -- upload: the tar stream -------------------------------------------------------------------


@dataclass(frozen=True)
class UploadItem:
    """One file to write: ``rel`` under work_dir, bytes from ``source`` (a local file) or ``data``."""

    rel: str
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False


def plan_upload(local_path: str | os.PathLike[str], prefix: str, patterns: Sequence[str]) -> list[UploadItem]:
    """The files of a local file or tree, minus exclusions, each with its validated pod path.

    Symlinked files are read through (as the seed did); symlinked directories are not followed
    (no loops); anything but regular files (fifos, sockets) is skipped. Every pod path is
    validated here, so a bad name fails before anything is sent.
    """
    root = Path(local_path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"local path does not exist: {root}")

    def item(path: Path, rel_parts: Sequence[str]) -> UploadItem | None:
        try:
            st = path.stat()
        except OSError as exc:
            raise TransferError(f"cannot read {path}: {exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            logger.debug("skipping %s: not a regular file", path)
            return None
        rel = "/".join([prefix, *rel_parts]) if prefix else "/".join(rel_parts)
        return UploadItem(validate_relative_path(rel), source=path, executable=bool(st.st_mode & 0o100))

    if not root.is_dir():
        if excluded([root.name], patterns):
            return []
        found = item(root, [root.name])
        return [found] if found else []
    items: list[UploadItem] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not excluded([d], patterns))
        rel_dir = Path(dirpath).relative_to(root).parts
        for name in sorted(filenames):
            if excluded([name], patterns):
                continue
            found = item(Path(dirpath, name), [*rel_dir, name])
            if found:
                items.append(found)
    return items


class _HashingFile:
    """A local file read by tarfile: hashes exactly the bytes that go into the stream."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.digest.update(data)
        return data


class _Sink(Protocol):
    def write(self, data: bytes) -> Any: ...


def write_upload_tar(items: Sequence[UploadItem], out: _Sink, *, now: float | None = None) -> dict[str, str]:
    """Stream the upload archive into ``out``: ``data/<rel>`` per item, then the sum list.

    Returns ``{rel: sha256}``. A local file that shrinks while being read raises
    :class:`TransferError`; one that grows is sent as it was when stat'ed.
    """
    sums: dict[str, str] = {}
    mtime = int(now if now is not None else time.time())
    with tarfile.open(
        fileobj=cast("IO[bytes]", out),  # tarfile only calls write() in "w|" mode
        mode="w|",
        format=tarfile.PAX_FORMAT,
        bufsize=_TAR_BUFSIZE,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:
        for it in items:
            info = tarfile.TarInfo("data/" + it.rel)
            info.mode = 0o755 if it.executable else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if it.data is not None:
                info.size, info.mtime = len(it.data), mtime
                sums[it.rel] = hashlib.sha256(it.data).hexdigest()
                tar.addfile(info, _BytesReader(it.data))
                continue
            assert it.source is not None
            try:
                with open(it.source, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    info.size, info.mtime = st.st_size, int(st.st_mtime)
                    hashed = _HashingFile(fh)
                    tar.addfile(info, cast("IO[bytes]", hashed))  # only read() is used
            except OSError as exc:
                if isinstance(exc, BrokenPipeError):
                    raise
                raise TransferError(f"cannot read {it.source} while uploading it: {exc}") from exc
            sums[it.rel] = hashed.digest.hexdigest()
        listing = "".join(f"{digest} {rel}\n" for rel, digest in sums.items())
        data = listing.encode("utf-8", "surrogateescape")
        info = tarfile.TarInfo(SUM_LIST)
        info.size, info.mode, info.mtime = len(data), 0o644, mtime
        tar.addfile(info, _BytesReader(data))
    return sums


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos : end])
        self._pos += len(chunk)
        return chunk


def parse_upload_reply(stdout: bytes, nonce: str) -> tuple[dict[str, str], int | None]:
    """The pod's sums and the count from its completion line (None: it never confirmed)."""
    sums: dict[str, str] = {}
    count: int | None = None
    done = re.compile(rb"^__KX_UPLOADED_" + re.escape(nonce.encode()) + rb"__ (\d+)$")
    for line in stdout.split(b"\n"):
        m = _SUM_LINE.match(line)
        if m:
            sums[m.group(2).decode("utf-8", "surrogateescape")] = m.group(1).decode()
            continue
        m = done.match(line)
        if m:
            count = int(m.group(1))
    return sums, count


# -- download: safe extraction ----------------------------------------------------------------


class _Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class HashingReader:
    """The raw stream as tarfile reads it: hashed, counted, and capped."""

    def __init__(self, raw: _Readable, cap: int) -> None:
        self._raw = raw
        self._cap = cap
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        if self.count > self._cap:
            raise TransferError(f"the download stream exceeds {self._cap} bytes")
        self.digest.update(data)
        return data

    def drain(self, limit: int) -> None:
        """Consume what follows the archive's end (padding), which the checksum also covers."""
        extra = 0
        while chunk := self.read(CHUNK):
            extra += len(chunk)
            if extra > limit or chunk.strip(b"\x00"):
                raise TransferError("unexpected data after the end of the tar stream")


_META_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def _guarded_tarinfo(max_header_bytes: int) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses huge metadata headers BEFORE tarfile reads them into memory."""

    class GuardedTarInfo(tarfile.TarInfo):
        limit: ClassVar[int] = max_header_bytes

        def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _META_TYPES and self.size > self.limit:
                raise TransferError(f"a tar metadata header of {self.size} bytes (limit {self.limit})")
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise TransferError(f"sparse member {self.name!r} refused")
            return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]

    return GuardedTarInfo


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symlink (-> {member.linkname!r})"
    if member.islnk():
        return f"a hardlink (-> {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    return f"of type {member.type!r}"


def _member_parts(name: str) -> list[str]:
    """The member's path components after normalising, or :class:`UnsafePathError`."""
    if "\x00" in name:
        raise UnsafePathError(f"tar member {name!r} contains NUL")
    if name.startswith("/") or (os.sep != "/" and (name.startswith(os.sep) or re.match(r"^[A-Za-z]:", name))):
        raise UnsafePathError(f"tar member {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"tar member {name!r} escapes the target ('..')")
    if os.sep != "/" and any(os.sep in p or (os.altsep and os.altsep in p) for p in parts):
        raise UnsafePathError(f"tar member {name!r} contains a path separator of this system")
    return parts


def _contained(path: Path, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


@dataclass
class Extracted:
    """What :func:`extract_tar_stream` wrote (paths inside ``dest``) and what it skipped."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total_bytes: int = 0


def extract_tar_stream(
    stream: _Readable,
    dest: Path,
    limits: TransferLimits,
    *,
    skip_unsafe: bool = False,
) -> Extracted:
    """Extract an untrusted tar stream into ``dest``, which must not exist yet (it is created).

    Only directories and regular files are written, with fresh permissions (0644/0755, never
    setuid), via O_EXCL|O_NOFOLLOW opens. Absolute names, ``..``, NUL, a second member with the
    same name and anything outside ``dest`` after normalising raise :class:`UnsafePathError`;
    links, devices and fifos too, unless ``skip_unsafe`` (then they are listed in ``skipped``).
    Caps raise :class:`TransferError`. On error, ``dest`` may hold a partial tree: the caller
    extracts into a staging directory and removes it.
    """
    dest.mkdir(mode=0o700)
    root_real = os.path.realpath(dest)
    result = Extracted()
    members = 0
    try:
        with tarfile.open(
            fileobj=cast("IO[bytes]", stream),  # stream mode only calls read()
            mode="r|",
            tarinfo=_guarded_tarinfo(limits.max_header_bytes),
            encoding="utf-8",
            errors="surrogateescape",
        ) as tar:
            for member in tar:
                members += 1
                if members > limits.max_members:
                    raise TransferError(f"the archive has more than {limits.max_members} members")
                parts = _member_parts(member.name)
                target = dest.joinpath(*parts)
                if not parts:
                    if not member.isdir():
                        raise UnsafePathError(f"tar member {member.name!r} names the target itself")
                    continue
                if not (member.isdir() or member.isreg()):
                    if skip_unsafe:
                        result.skipped.append(member.name)
                        continue
                    raise UnsafePathError(f"tar member {member.name!r} is {_kind(member)}; refused")
                if member.sparse is not None:
                    raise TransferError(f"sparse member {member.name!r} refused")
                parent = target.parent
                try:
                    parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                except (FileExistsError, NotADirectoryError) as exc:
                    raise UnsafePathError(f"tar member {member.name!r}: a parent of it is a file") from exc
                if not _contained(parent, root_real):
                    raise UnsafePathError(f"tar member {member.name!r} lands outside the target")
                if member.isdir():
                    if target.exists() and not target.is_dir():
                        raise UnsafePathError(f"tar member {member.name!r}: a file of that name exists")
                    target.mkdir(exist_ok=True, mode=0o755)
                    continue
                if member.size > limits.max_total_bytes - result.total_bytes:
                    raise TransferError(
                        f"the download exceeds {limits.max_total_bytes} bytes (member {member.name!r} "
                        f"alone is {member.size})"
                    )
                _write_member(tar, member, target)
                result.total_bytes += member.size
                result.files.append(target)
    except (UnsafePathError, TransferError):
        raise
    except RecursionError as exc:
        raise TransferError("the tar stream nests too many headers") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise TransferError(f"not a valid tar stream: {exc}") from exc
    return result


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise TransferError(f"tar member {member.name!r} has no data")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as exc:
        raise UnsafePathError(
            f"tar member {member.name!r} appears twice or clashes with a directory"
        ) from exc
    with os.fdopen(fd, "wb") as out:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(CHUNK, remaining))
            if not chunk:
                raise TransferError(f"the stream ended inside member {member.name!r}")
            out.write(chunk)
            remaining -= len(chunk)
    os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)


def parse_sent_marker(stderr: bytes, nonce: str) -> tuple[int, str] | None:
    """``(tar exit code, sha256)`` from the pod's last stderr line, if it got that far."""
    pattern = re.compile(rb"__KX_SENT_" + re.escape(nonce.encode()) + rb"__ (\d+) ([0-9a-f]{64})?\s*$")
    for line in reversed(stderr.split(b"\n")):
        m = pattern.search(line)
        if m:
            return int(m.group(1)), (m.group(2) or b"").decode()
    return None


def pod_message(stderr: bytes) -> str | None:
    """The in-pod scripts' own complaint ("kubectl-executor: ..."), if any."""
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.startswith("kubectl-executor: ")]
    return lines[-1].removeprefix("kubectl-executor: ") if lines else None


__all__ = [
    "DEFAULT_EXCLUDES",
    "Extracted",
    "HashingReader",
    "TransferLimits",
    "UploadItem",
    "extract_tar_stream",
    "parse_sent_marker",
    "parse_upload_reply",
    "plan_upload",
    "pod_relative",
    "write_upload_tar",
]
