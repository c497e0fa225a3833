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

This module is the kubectl side (the executor's upload and download methods); the tar itself,
pure and unit-tested on bytes, is :mod:`~kubectl_executor._exec.tar`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Protocol

from .._cluster.kubectl import Kubectl, classify_failure
from .._cluster.manifest import CONTAINER
from .._cluster.retry import call_with_retry
from .._cluster.runner import Process
from ..errors import InvalidInputError, RemoteNotFoundError, TransferError, TransientError, UnsafePathError
from .protocol import LOG_DIR, OutputBudget, new_nonce, pod_file
from .tar import (
    CHUNK,
    DEFAULT_EXCLUDES,
    Extracted,
    HashingReader,
    TransferLimits,
    UploadItem,
    extract_tar_stream,
    parse_sent_marker,
    parse_upload_reply,
    plan_upload,
    pod_message,
    pod_relative,
    write_upload_tar,
)

logger = logging.getLogger(__name__)


UPLOAD_SCRIPT = pod_file("upload.sh").decode()
DOWNLOAD_SCRIPT = pod_file("download.sh").decode()
TAR_HELPER = pod_file("kxtar.py").decode()

DEFAULT_TRANSFER_TIMEOUT = 900.0
"""Seconds one transfer may take, end to end (kubectl is killed after that)."""


class _ProcessStdin:
    """tarfile's output file: straight into kubectl's stdin (the pipe provides back-pressure)."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def write(self, data: bytes) -> int:
        self._proc.write(bytes(data))
        return len(data)


class _Channel:
    """kubectl's output pump pushes, tarfile pulls; bounded, so memory stays flat.

    ``abort()`` makes further writes vanish (so the pump never blocks once we gave up)."""

    def __init__(self, capacity: int = 8 * CHUNK) -> None:
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


# -- the executor's files -------------------------------------------------------------------


class PodTarget(Protocol):
    """What :class:`PodFiles` needs of the executor that holds it: the pod, started on demand."""

    @property
    def kubectl(self) -> Kubectl: ...

    @property
    def pod_name(self) -> str: ...

    @property
    def work_dir(self) -> Path: ...

    @property
    def transfer_limits(self) -> TransferLimits: ...

    def start(self) -> None: ...


class PodFiles:
    """Files into and out of ``pod``'s work_dir (the executor's upload and download methods)."""

    def __init__(self, pod: PodTarget) -> None:
        self._pod = pod

    # -- upload -------------------------------------------------------------------------------

    def upload_file_content(
        self, relative_path: str | PurePath, content: str | bytes, *, timeout: float | None = None
    ) -> str:
        """Write ``content`` (str as UTF-8, or bytes) at ``relative_path`` under work_dir.

        Returns the pod path. The file appears whole or not at all."""
        _, rel = pod_relative(relative_path, [str(self._pod.work_dir)])
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
            _, prefix = pod_relative(remote_prefix.replace("\\", "/").rstrip("/"), [str(self._pod.work_dir)])
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
        self._pod.start()
        deadline = DEFAULT_TRANSFER_TIMEOUT if timeout is None else timeout
        work = str(self._pod.work_dir)

        def attempt() -> list[str]:
            nonce = new_nonce()
            args = ["exec", "-i", self._pod.pod_name, "-c", CONTAINER, "--", "sh", "-c", UPLOAD_SCRIPT]
            args += ["kx", TAR_HELPER]
            out = OutputBudget(32 * CHUNK)
            err = OutputBudget(CHUNK)
            proc = self._pod.kubectl.spawn(args, on_stdout=out, on_stderr=err)
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
                raise TransferError(f"the upload to pod {self._pod.pod_name} did not finish in {deadline:g}s")
            if count is None or code != 0 or sums is None:
                complaint = pod_message(stderr)
                if complaint:
                    raise TransferError(f"upload to pod {self._pod.pod_name} failed: {complaint}")
                if code != 0:
                    raise classify_failure(
                        self._pod.kubectl.argv(args),
                        code or 0,
                        stderr.decode(errors="replace"),
                        exec_call=True,
                    )
                raise TransferError(f"the pod {self._pod.pod_name} did not confirm the upload")
            mismatched = sorted(rel for rel, digest in sums.items() if pod_sums.get(rel) != digest)
            if mismatched or count != len(sums):
                raise TransferError(f"checksums differ between client and pod for {mismatched[:5]}")
            return [f"{work.rstrip('/')}/{it.rel}" for it in items]

        # A repeated upload rewrites the same bytes, so transient failures are retried.
        return call_with_retry(self._pod.kubectl.retry, attempt, retry_on=(TransientError,), what="upload")

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
        base, rel = pod_relative(remote_path, [str(self._pod.work_dir), LOG_DIR])
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
        base, rel = pod_relative(remote_dir, [str(self._pod.work_dir), LOG_DIR], allow_root=True)
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
        limits = limits or self._pod.transfer_limits
        deadline = DEFAULT_TRANSFER_TIMEOUT if timeout is None else timeout
        self._pod.start()
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
        return call_with_retry(self._pod.kubectl.retry, attempt, retry_on=(TransientError,), what="download")

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
        args = ["exec", "-i", self._pod.pod_name, "-c", CONTAINER, "--", "sh", "-c", DOWNLOAD_SCRIPT]
        args += ["kx", TAR_HELPER]
        channel = _Channel()
        err = OutputBudget(CHUNK)
        proc = self._pod.kubectl.spawn(args, on_stdout=channel.write, on_stderr=err)
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
            reader.drain(limit=CHUNK)
        except (TransferError, UnsafePathError, OSError) as exc:
            failure = exc
        if failure is not None:
            channel.abort()
            proc.kill()
        driver.join()
        stderr = err.value()
        complaint = pod_message(stderr)
        code = state.get("code")
        if state.get("timed_out"):
            raise TransferError(f"the download from pod {self._pod.pod_name} did not finish in {deadline:g}s")
        if complaint and code == 3:  # download.sh: the path does not exist
            raise RemoteNotFoundError(f"{rel!r} does not exist in pod {self._pod.pod_name}: {complaint}")
        if complaint and code:
            raise TransferError(f"download of {rel!r} from pod {self._pod.pod_name} failed: {complaint}")
        # kubectl's own failure (pod gone, stream dropped) explains a broken tar: say that, typed,
        # so transient ones are retried. -9 is our own kill after refusing the content.
        if code and code != -9 and parse_sent_marker(stderr, nonce) is None:
            raise classify_failure(self._pod.kubectl.argv(args), code, stderr.decode(errors="replace"))
        if failure is not None:
            if isinstance(failure, (TransferError, UnsafePathError)):
                raise failure
            raise TransferError(f"cannot write the download locally: {failure}") from failure
        sent = parse_sent_marker(stderr, nonce)
        if sent is None:
            raise TransferError(
                f"the pod {self._pod.pod_name} did not confirm the download (stream cut short?)"
            )
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


__all__ = ["DEFAULT_TRANSFER_TIMEOUT", "PodFiles", "PodTarget"]
