"""A Google ADK code executor whose code runs in a Kubernetes pod (through kubectl).

``LlmAgent(model=..., code_executor=KubectlCodeExecutor(image="python:3-slim"))``: the code
blocks the model writes run with Python in the pod's work_dir. Input files (ADK's
``input_files``) are uploaded there once; files the code creates or changes under work_dir come
back as ``output_files`` (ADK saves them as artifacts). ``stateful=True`` keeps one interpreter
per ADK execution id (one pod each), so variables persist between the blocks of a session.
Unlike ADK's GKE executor, no Job per call and no Kubernetes client: one pod, reached by kubectl.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import require

require("google.adk", "adk")

from google.adk.agents.invocation_context import InvocationContext  # noqa: E402
from google.adk.code_executors.base_code_executor import BaseCodeExecutor  # noqa: E402
from google.adk.code_executors.code_execution_utils import (  # noqa: E402
    CodeExecutionInput,
    CodeExecutionResult,
    File,
)
from pydantic import PrivateAttr  # noqa: E402

from ..boundary import ChangedFile  # noqa: E402
from ..executor import KubernetesCommandLineCodeExecutor  # noqa: E402

__all__ = ["KubectlCodeExecutor"]

MAX_OUTPUT_FILE_BYTES = 16 * 1024 * 1024
"""Changed files larger than this stay in the pod (named in stderr), not sent to ADK."""


class _Pod:
    """One executor with what the adapter knows about its files."""

    def __init__(self, executor: KubernetesCommandLineCodeExecutor, owned: bool) -> None:
        self.executor = executor
        self.owned = owned
        self.uploaded: dict[str, str] = {}  # input file name -> sha256 of what was sent


class KubectlCodeExecutor(BaseCodeExecutor):
    """ADK ``BaseCodeExecutor`` over :class:`KubernetesCommandLineCodeExecutor`.

    ``executor=`` uses a pod you made (all executions share it; you stop it); otherwise the
    keyword arguments in ``executor_options`` make pods that :meth:`close` deletes.
    """

    _given: KubernetesCommandLineCodeExecutor | None = PrivateAttr(default=None)
    _options: dict[str, Any] = PrivateAttr(default_factory=dict)
    _pods: dict[str, _Pod] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        *,
        executor: KubernetesCommandLineCodeExecutor | None = None,
        executor_options: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        if executor is not None and executor_options:
            raise TypeError("pass either executor= or executor_options=, not both")
        self._given = executor
        self._options = dict(executor_options or {})

    def _pod(self, execution_id: str | None) -> _Pod:
        key = execution_id if self.stateful and execution_id else ""
        with self._lock:
            pod = self._pods.get(key)
            if pod is None:
                if self._given is not None:
                    pod = _Pod(self._given, owned=False)
                else:
                    options = {**self._options, "stateful": self.stateful}
                    pod = _Pod(KubernetesCommandLineCodeExecutor(**options), owned=True)
                self._pods[key] = pod
            return pod

    def execute_code(
        self, invocation_context: InvocationContext, code_execution_input: CodeExecutionInput
    ) -> CodeExecutionResult:
        """Run the block in the pod; stdout, stderr, exit code and the files it wrote."""
        pod = self._pod(code_execution_input.execution_id)
        self._upload_inputs(pod, code_execution_input.input_files)
        result = pod.executor.run(code_execution_input.code, "python", timeout=self.timeout_seconds)
        stderr = result.stderr
        if result.timed_out:
            limit = self.timeout_seconds or pod.executor.timeout
            note = f"Code execution timed out after {limit} seconds."
            stderr = f"{stderr}\n{note}" if stderr else note
        if result.state_lost:
            note = "The interpreter was restarted before this block: earlier variables are gone."
            stderr = f"{note}\n{stderr}"
        files, skipped = self._collect_outputs(pod, result.files)
        if skipped:
            stderr += "".join(f"\nLeft in the pod (over {MAX_OUTPUT_FILE_BYTES} bytes): {p}" for p in skipped)
        if result.files_truncated:
            stderr += "\nMore files may have changed than are listed (the scan of work_dir was cut)."
        return CodeExecutionResult(
            stdout=result.stdout, stderr=stderr, output_files=files, exit_code=result.exit_code
        )

    def _upload_inputs(self, pod: _Pod, files: list[File]) -> None:
        """Send the input files the pod does not have yet (ADK passes all of them every time).
        They are sent before the block, so they are not among the files it changed."""
        for file in files:
            data = _file_bytes(file)
            digest = hashlib.sha256(data).hexdigest()
            if pod.uploaded.get(file.name) != digest:
                pod.executor.upload_file_content(file.name, data)
                pod.uploaded[file.name] = digest

    def _collect_outputs(self, pod: _Pod, changed: Sequence[ChangedFile]) -> tuple[list[File], list[str]]:
        """The files the block created or changed (the executor's list) as ADK Files."""
        files: list[File] = []
        skipped: list[str] = []
        with tempfile.TemporaryDirectory(prefix="kx-adk-") as scratch:
            for index, entry in enumerate(sorted(changed, key=lambda c: c.path)):
                if entry.size > MAX_OUTPUT_FILE_BYTES:
                    skipped.append(entry.path)
                    continue
                data = pod.executor.download_file(entry.path, Path(scratch) / str(index)).read_bytes()
                mime = mimetypes.guess_type(entry.path)[0] or "application/octet-stream"
                files.append(File(name=entry.path, content=data, mime_type=mime))
        return files, skipped

    def close(self) -> None:
        """Delete the pods this executor made."""
        with self._lock:
            pods, self._pods = list(self._pods.values()), {}
        for pod in pods:
            if pod.owned:
                pod.executor.stop()


def _file_bytes(file: File) -> bytes:
    """ADK's File content: bytes as they are, a str as base64 (as ADK's own helpers read it)."""
    if isinstance(file.content, bytes):
        return file.content
    return base64.b64decode(file.content)
