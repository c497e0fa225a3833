"""A LangChain DeepAgents sandbox backend whose commands and files live in a Kubernetes pod.

``create_deep_agent(model=..., backend=KubectlSandbox(image="python:3-slim"))``: the agent's
``execute`` tool runs shell commands in the pod, and its file tools (ls, read_file, write_file,
edit_file, glob, grep) work on the pod's files through :class:`deepagents.backends.sandbox.BaseSandbox`.
Files move only under the executor's work_dir (relative paths are taken from it); other paths
are refused per file with ``permission_denied``, as the library never writes outside it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from . import require

require("deepagents", "deepagents")

from deepagents.backends.protocol import (  # noqa: E402
    ExecuteResponse,
    FileDownloadResponse,
    FileOperationError,
    FileUploadResponse,
)
from deepagents.backends.sandbox import BaseSandbox  # noqa: E402

from ..errors import InvalidInputError, RemoteNotFoundError, TransferError, UnsafePathError  # noqa: E402
from ..executor import KubernetesCommandLineCodeExecutor  # noqa: E402

__all__ = ["KubectlSandbox"]

TIMED_OUT_EXIT = 124  # what timeout(1) exits with; the output says so too


class KubectlSandbox(BaseSandbox):
    """``BaseSandbox`` over a :class:`KubernetesCommandLineCodeExecutor` (one pod).

    Pass ``executor=`` to use a pod you made (you stop it), or the executor's keyword arguments
    to make one that :meth:`close` (or the ``with`` exit) deletes.
    """

    def __init__(self, *, executor: KubernetesCommandLineCodeExecutor | None = None, **executor_kwargs: Any):
        if executor is not None and executor_kwargs:
            raise TypeError("pass either executor= or the executor's keyword arguments, not both")
        self._owned = executor is None
        self.executor = executor or KubernetesCommandLineCodeExecutor(**executor_kwargs)

    @property
    def id(self) -> str:
        """The pod's name (with ``attach=True`` an executor can reach it again)."""
        return self.executor.pod_name

    def execute(self, command: str, *, timeout: int | None = None) -> ExecuteResponse:
        """Run ``command`` with bash in work_dir; stdout then stderr, a non-zero exit is data.

        ``timeout`` None or 0 means the executor's own timeout (the pod never runs unbounded)."""
        result = self.executor.run(command, "bash", timeout=timeout or None)
        output = result.stdout
        if result.stderr:
            output += ("" if not output or output.endswith("\n") else "\n") + result.stderr
        if result.timed_out:
            limit = timeout or self.executor.timeout
            output += f"\n[command timed out after {limit} s and was killed]"
            return ExecuteResponse(output=output, exit_code=TIMED_OUT_EXIT, truncated=result.truncated)
        return ExecuteResponse(output=output, exit_code=result.exit_code, truncated=result.truncated)

    def _relative(self, path: str) -> str | None:
        """``path`` relative to work_dir, or None when it is outside it."""
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            return str(pure)
        try:
            return str(pure.relative_to(str(self.executor.work_dir)))
        except ValueError:
            return None

    def upload_files(self, files: list[tuple[str, bytes]]) -> list[FileUploadResponse]:
        """Write each file (parents made); failures are per file, as the protocol asks."""
        done: list[FileUploadResponse] = []
        for path, content in files:
            rel = self._relative(path)
            if rel is None:
                done.append(FileUploadResponse(path=path, error="permission_denied"))
                continue
            try:
                self.executor.upload_file_content(rel, content)
            except (UnsafePathError, InvalidInputError):
                done.append(FileUploadResponse(path=path, error="invalid_path"))
            except TransferError:
                done.append(FileUploadResponse(path=path, error="permission_denied"))
            else:
                done.append(FileUploadResponse(path=path, error=None))
        return done

    def download_files(self, paths: list[str]) -> list[FileDownloadResponse]:
        """Read each file's bytes; failures are per file, as the protocol asks."""
        done: list[FileDownloadResponse] = []
        with tempfile.TemporaryDirectory(prefix="kx-deepagents-") as scratch:
            for index, path in enumerate(paths):
                rel = self._relative(path)
                error: FileOperationError | None = None
                content: bytes | None = None
                if rel is None:
                    error = "permission_denied"
                else:
                    local = Path(scratch) / str(index)
                    try:
                        content = self.executor.download_file(rel, local).read_bytes()
                    except RemoteNotFoundError:
                        error = "file_not_found"
                    except (UnsafePathError, InvalidInputError):
                        error = "invalid_path"
                    except TransferError:
                        error = "is_directory" if self._is_dir(rel) else "permission_denied"
                done.append(FileDownloadResponse(path=path, content=content, error=error))
        return done

    def _is_dir(self, rel: str) -> bool:
        # The path goes in the environment, never into the command text.
        return self.executor.run('test -d "$KX_PATH"', "bash", env={"KX_PATH": rel}).exit_code == 0

    def close(self) -> None:
        """Delete the pod if this sandbox made it."""
        if self._owned:
            self.executor.stop()

    def __enter__(self) -> KubectlSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
