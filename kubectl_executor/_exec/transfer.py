"""Files into and out of the pod: one ``kubectl exec`` per transfer, tar on its stdin or stdout.

Upload: the client streams a tar (built with :mod:`tarfile`, file by file, never whole in memory)
whose last member lists the sha256 of every file, computed while the file was streamed. The pod
(``_pod/upload.sh``) extracts into a fresh directory inside work_dir, checks every sum, prints
its own, and only then renames the files into place; the client compares the sums again.

Download: the pod (``_pod/download.sh``) sends ``tar cf -`` on stdout and the sha256 of that
exact byte stream on stderr. The client trusts none of it: every member is checked (no absolute
names, no ``..``, no links, devices or fifos, containment after normalising, size and count
caps) while extracting into a fresh directory next to the target, the stream's checksum is
compared, and the result is renamed into place only when everything passed (CVE-2018-1002100,
CVE-2019-1002101, CVE-2019-11246, CVE-2019-11249, CVE-2019-11251 came from trusting such tar).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO, ClassVar, Protocol, cast

from .._cluster.kubectl import Kubectl, classify_failure
from .._cluster.manifest import CONTAINER
from .._cluster.retry import call_with_retry
from .._cluster.runner import Process
from ..errors import InvalidInputError, RemoteNotFoundError, TransferError, TransientError, UnsafePathError
from .languages import validate_relative_path
from .protocol import LOG_DIR, OutputBudget, new_nonce, pod_file

logger = logging.getLogger(__name__)

UPLOAD_SCRIPT = pod_file("upload.sh").decode()
DOWNLOAD_SCRIPT = pod_file("download.sh").decode()
TAR_HELPER = pod_file("kxtar.py").decode()

DEFAULT_EXCLUDES: tuple[str, ...] = ("__pycache__", ".*")
"""The seed's rule: skip ``__pycache__`` and names starting with "." (glob patterns, per component)."""

DEFAULT_TRANSFER_TIMEOUT = 900.0
"""Seconds one transfer may take, end to end (kubectl is killed after that)."""

SUM_LIST = "kx.sha256"
_CHUNK = 1 << 20
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


class _ProcessStdin:
    """tarfile's output file: straight into kubectl's stdin (the pipe provides back-pressure)."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def write(self, data: bytes) -> int:
        self._proc.write(bytes(data))
        return len(data)


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
        while chunk := self.read(_CHUNK):
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
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise TransferError(f"the stream ended inside member {member.name!r}")
            out.write(chunk)
            remaining -= len(chunk)
    os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)


class _Channel:
    """kubectl's output pump pushes, tarfile pulls; bounded, so memory stays flat.

    ``abort()`` makes further writes vanish (so the pump never blocks once we gave up)."""

    def __init__(self, capacity: int = 8 * _CHUNK) -> None:
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._capacity = capacity
        self._eof = False
        self._dropping = False

    def write(self, chunk: bytes) -> None:
        with self._cond:
            while self._size >= self._capacity and not self._dropping:
                self._cond.wait()
            if self._dropping or not chunk:
                return
            self._chunks.append(bytes(chunk))
            self._size += len(chunk)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._dropping = True
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and not self._dropping:
                self._cond.wait()
            out = bytearray()
            while self._chunks and (size < 0 or len(out) < size):
                chunk = self._chunks.popleft()
                room = len(chunk) if size < 0 else size - len(out)
                if len(chunk) > room:
                    self._chunks.appendleft(chunk[room:])
                    chunk = chunk[:room]
                out += chunk
                self._size -= len(chunk)
            self._cond.notify_all()
            return bytes(out)


def parse_sent_marker(stderr: bytes, nonce: str) -> tuple[int, str] | None:
    """``(tar exit code, sha256)`` from the pod's last stderr line, if it got that far."""
    pattern = re.compile(rb"__KX_SENT_" + re.escape(nonce.encode()) + rb"__ (\d+) ([0-9a-f]{64})?\s*$")
    for line in reversed(stderr.split(b"\n")):
        m = pattern.search(line)
        if m:
            return int(m.group(1)), (m.group(2) or b"").decode()
    return None


def _pod_message(stderr: bytes) -> str | None:
    """The in-pod scripts' own complaint ("kubectl-executor: ..."), if any."""
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.startswith("kubectl-executor: ")]
    return lines[-1].removeprefix("kubectl-executor: ") if lines else None


# -- the executor's methods -------------------------------------------------------------------


class FilesMixin:
    """Upload and download methods of :class:`~kubectl_executor.KubernetesCommandLineCodeExecutor`."""

    transfer_limits: TransferLimits = TransferLimits()
    """Caps for downloads; set on an executor to change its defaults."""

    _kubectl: Kubectl
    _pod_name: str
    _work_dir: Path

    if TYPE_CHECKING:

        def _ensure_pod(self) -> None: ...

    # -- upload -------------------------------------------------------------------------------

    def upload_file_content(
        self, relative_path: str | PurePath, content: str | bytes, *, timeout: float | None = None
    ) -> str:
        """Write ``content`` (str as UTF-8, or bytes) at ``relative_path`` under work_dir.

        Returns the pod path. The file appears whole or not at all."""
        _, rel = pod_relative(relative_path, [str(self._work_dir)])
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, (bytes, bytearray, memoryview)):
            data = bytes(content)
        else:
            raise TypeError(f"content must be str or bytes, not {type(content).__name__}")
        return self._upload_items([UploadItem(rel, data=data)], timeout)[0]

    def upload_from_disk(
        self,
        local_path: str | os.PathLike[str],
        *,
        remote_prefix: str = "",
        encoding: str = "utf-8",
        exclude: Sequence[str] = DEFAULT_EXCLUDES,
        timeout: float | None = None,
    ) -> list[str]:
        """Upload a local file, or every file of a tree, into work_dir in ONE exec.

        A file lands at ``<remote_prefix>/<name>``, a tree's files at
        ``<remote_prefix>/<path inside the tree>``. ``exclude`` holds glob patterns matched
        against each path component (default: ``__pycache__`` and dot-names, like the seed).
        Files travel byte for byte (binary included); ``encoding`` is accepted for the seed's
        signature and not needed. Returns the pod paths written.
        """
        del encoding  # bytes are sent verbatim; kept so seed callers need no change
        if isinstance(exclude, str):
            raise InvalidInputError("exclude must be a sequence of glob patterns, not one string")
        prefix = ""
        if remote_prefix.strip("/"):
            _, prefix = pod_relative(remote_prefix.replace("\\", "/").rstrip("/"), [str(self._work_dir)])
        items = plan_upload(local_path, prefix, tuple(exclude))
        if not items:
            return []
        return self._upload_items(items, timeout)

    def _upload_items(self, items: Sequence[UploadItem], timeout: float | None) -> list[str]:
        seen: set[str] = set()
        for it in items:
            if it.rel in seen:
                raise InvalidInputError(f"{it.rel!r} is uploaded twice")
            seen.add(it.rel)
        self._ensure_pod()
        deadline = DEFAULT_TRANSFER_TIMEOUT if timeout is None else timeout
        work = str(self._work_dir)

        def attempt() -> list[str]:
            nonce = new_nonce()
            args = ["exec", "-i", self._pod_name, "-c", CONTAINER, "--", "sh", "-c", UPLOAD_SCRIPT]
            args += ["kx", TAR_HELPER]
            out = OutputBudget(32 * _CHUNK)
            err = OutputBudget(_CHUNK)
            proc = self._kubectl.spawn(args, on_stdout=out, on_stderr=err)
            killer = _Deadline(proc, deadline)
            sums: dict[str, str] | None = None
            try:
                proc.write(f"KXU1 {nonce}\n{work}\n".encode())
                sums = write_upload_tar(items, _ProcessStdin(proc))
            except BrokenPipeError as exc:
                logger.debug("upload stream ended early: %s", exc)  # the exit status tells why
            except BaseException:
                proc.kill()  # never let the pod commit a stream we did not finish
                raise
            finally:
                proc.close_stdin()
            code = proc.wait(None)
            killer.cancel()
            stdout, stderr = out.value(), err.value()
            pod_sums, count = parse_upload_reply(stdout, nonce)
            if killer.fired:
                raise TransferError(f"the upload to pod {self._pod_name} did not finish in {deadline:g}s")
            if count is None or code != 0 or sums is None:
                complaint = _pod_message(stderr)
                if complaint:
                    raise TransferError(f"upload to pod {self._pod_name} failed: {complaint}")
                if code != 0:
                    raise classify_failure(
                        self._kubectl.argv(args), code or 0, stderr.decode(errors="replace"), exec_call=True
                    )
                raise TransferError(f"the pod {self._pod_name} did not confirm the upload")
            mismatched = sorted(rel for rel, digest in sums.items() if pod_sums.get(rel) != digest)
            if mismatched or count != len(sums):
                raise TransferError(f"checksums differ between client and pod for {mismatched[:5]}")
            return [f"{work.rstrip('/')}/{it.rel}" for it in items]

        # A repeated upload rewrites the same bytes, so transient failures are retried.
        return call_with_retry(self._kubectl.retry, attempt, retry_on=(TransientError,), what="upload")

    # -- download -----------------------------------------------------------------------------

    def download_file(
        self,
        remote_path: str | PurePath,
        local_path: str | os.PathLike[str],
        *,
        limits: TransferLimits | None = None,
        timeout: float | None = None,
    ) -> Path:
        """Copy one regular file from the pod (relative to work_dir, or absolute under work_dir or
        the run-log directory) to ``local_path``, replacing it atomically. Returns the local path."""
        base, rel = pod_relative(remote_path, [str(self._work_dir), LOG_DIR])
        target = Path(local_path).expanduser().absolute()
        if target.is_dir() and not target.is_symlink():
            raise InvalidInputError(f"{target} is a directory; give the file's local path")
        expected = PurePosixPath(rel).name

        def place(tree: Path, extracted: Extracted) -> list[Path]:
            names = [p.relative_to(tree).as_posix() for p in extracted.files]
            if names != [expected] or extracted.skipped:
                raise TransferError(f"expected the single file {expected!r} from the pod, got {names[:5]}")
            os.replace(extracted.files[0], target)
            return [target]

        return self._download("file", base, rel, target, place, limits, False, timeout)[0]

    def download_dir(
        self,
        remote_dir: str | PurePath,
        local_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        skip_unsafe: bool = False,
        limits: TransferLimits | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Copy a directory of the pod (``""`` = all of work_dir) to ``local_dir``.

        ``local_dir`` must not exist (or be empty) unless ``overwrite``, which replaces it whole.
        Links, devices and fifos make the download fail, or with ``skip_unsafe`` are left out.
        Returns the local files written."""
        base, rel = pod_relative(remote_dir, [str(self._work_dir), LOG_DIR], allow_root=True)
        target = Path(local_dir).expanduser().absolute()
        if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
            raise InvalidInputError(f"{target} exists; pass overwrite=True to replace it")

        def place(tree: Path, extracted: Extracted) -> list[Path]:
            old = tree.parent / "old"
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                os.rename(target, old)
            os.rename(tree, target)
            if extracted.skipped:
                logger.warning("download of %s skipped links/special files: %s", rel, extracted.skipped[:20])
            return [target / p.relative_to(tree) for p in extracted.files]

        return self._download("dir", base, rel, target, place, limits, skip_unsafe, timeout)

    def _download(
        self,
        kind: str,
        base: str,
        rel: str,
        target: Path,
        place: Any,
        limits: TransferLimits | None,
        skip_unsafe: bool,
        timeout: float | None,
    ) -> list[Path]:
        limits = limits or self.transfer_limits
        deadline = DEFAULT_TRANSFER_TIMEOUT if timeout is None else timeout
        self._ensure_pod()
        target.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> list[Path]:
            nonce = new_nonce()
            staging = target.parent / f".{target.name}.kx-{nonce[:12]}"
            staging.mkdir(mode=0o700)
            try:
                tree = staging / "tree"
                extracted = self._receive(kind, base, rel, nonce, tree, limits, skip_unsafe, deadline)
                result: list[Path] = place(tree, extracted)
                return result
            finally:
                shutil.rmtree(staging, ignore_errors=True)

        # Reads are safe to repeat; each attempt starts from a fresh staging directory.
        return call_with_retry(self._kubectl.retry, attempt, retry_on=(TransientError,), what="download")

    def _receive(
        self,
        kind: str,
        base: str,
        rel: str,
        nonce: str,
        tree: Path,
        limits: TransferLimits,
        skip_unsafe: bool,
        deadline: float,
    ) -> Extracted:
        args = ["exec", "-i", self._pod_name, "-c", CONTAINER, "--", "sh", "-c", DOWNLOAD_SCRIPT]
        args += ["kx", TAR_HELPER]
        channel = _Channel()
        err = OutputBudget(_CHUNK)
        proc = self._kubectl.spawn(args, on_stdout=channel.write, on_stderr=err)
        state: dict[str, Any] = {}

        def drive() -> None:
            try:
                proc.write(f"KXD1 {nonce} {kind}\n{base}\n{rel}\n".encode())
            except (BrokenPipeError, OSError):
                pass
            finally:
                proc.close_stdin()
            code = proc.wait(deadline)
            if code is None:
                state["timed_out"] = True
                proc.kill()
            state["code"] = code
            channel.close()

        driver = threading.Thread(target=drive, name="kx-download", daemon=True)
        driver.start()
        reader = HashingReader(channel, limits.stream_cap())
        failure: BaseException | None = None
        try:
            extracted = extract_tar_stream(reader, tree, limits, skip_unsafe=skip_unsafe)
            reader.drain(limit=_CHUNK)
        except (TransferError, UnsafePathError, OSError) as exc:
            failure = exc
        if failure is not None:
            channel.abort()
            proc.kill()
        driver.join()
        stderr = err.value()
        complaint = _pod_message(stderr)
        code = state.get("code")
        if state.get("timed_out"):
            raise TransferError(f"the download from pod {self._pod_name} did not finish in {deadline:g}s")
        if complaint and code == 3:  # download.sh: the path does not exist
            raise RemoteNotFoundError(f"{rel!r} does not exist in pod {self._pod_name}: {complaint}")
        if complaint and code:
            raise TransferError(f"download of {rel!r} from pod {self._pod_name} failed: {complaint}")
        # kubectl's own failure (pod gone, stream dropped) explains a broken tar: say that, typed,
        # so transient ones are retried. -9 is our own kill after refusing the content.
        if code and code != -9 and parse_sent_marker(stderr, nonce) is None:
            raise classify_failure(self._kubectl.argv(args), code, stderr.decode(errors="replace"))
        if failure is not None:
            if isinstance(failure, (TransferError, UnsafePathError)):
                raise failure
            raise TransferError(f"cannot write the download locally: {failure}") from failure
        sent = parse_sent_marker(stderr, nonce)
        if sent is None:
            raise TransferError(f"the pod {self._pod_name} did not confirm the download (stream cut short?)")
        rc, digest = sent
        if rc != 0:
            detail = stderr.decode(errors="replace").strip().splitlines()[:3]
            raise TransferError(f"tar in the pod failed with exit code {rc}: {detail}")
        if digest != reader.digest.hexdigest():
            raise TransferError("checksum mismatch: the stream received differs from the one the pod sent")
        return extracted


class _Deadline:
    """Kills a kubectl that outlives its deadline (its writes then fail and the wait returns)."""

    def __init__(self, proc: Process, seconds: float) -> None:
        self.fired = False
        self._proc = proc
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(Exception):
            self._proc.kill()

    def cancel(self) -> None:
        self._timer.cancel()


__all__ = [
    "DEFAULT_EXCLUDES",
    "DEFAULT_TRANSFER_TIMEOUT",
    "Extracted",
    "FilesMixin",
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
