"""The MCP unit tests' double (imported by tests/unit/test_mcp.py): :class:`FakeSandbox`, which
stands for what the MCP server uses of the executor, the :class:`kubectl_executor.mcp.Sandbox`
protocol. Its "pod" is a local directory where the server's fixed in-pod scripts run under the
host's /bin/sh. ``mypy --strict tests/unit/kx_mcp_fakes.py`` (in .ci/test) fails when the fake
stops conforming to the protocol (:func:`as_sandbox`). It needs the mcp extra (the protocol's
module imports the MCP SDK), so it is kept apart from kx_fakes.py, which every unit test imports.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubectl_executor._exec.languages import code_filename, filename_hint, resolve_language
from kubectl_executor._exec.protocol import OutputCallback
from kubectl_executor._exec.tar import TransferLimits, pod_relative
from kubectl_executor.boundary import ToolCommandLineCodeResult
from kubectl_executor.errors import InvalidInputError, RemoteNotFoundError, TransferError
from kubectl_executor.executor import SCRATCH_STEM, BlockResult
from kubectl_executor.mcp import Sandbox

_pod_numbers = itertools.count(1)


class FakeSandbox:
    """Stands for the executor's public API (:class:`Sandbox`): a local directory is its pod's
    workspace. ``run`` writes the code where the executor would (its name, or the hidden scratch
    file) and runs it with the host's interpreter, unless a programmed result is queued in
    ``results``; ``hold`` keeps a run in flight until it is set (or the run is cancelled)."""

    def __init__(self, root: Path, *, budget: int = 64 * 1024) -> None:
        self.root = root
        self.pod_name = f"kx-fake{next(_pod_numbers)}"
        self.budget = budget
        self.start_error: BaseException | None = None
        self.run_error: BaseException | None = None
        self.started = False
        self.stopped = threading.Event()
        self.cancelled = threading.Event()
        self.running = threading.Event()
        self.hold: threading.Event | None = None
        self.runs: list[dict[str, Any]] = []
        self.results: deque[BlockResult] = deque()
        self.installs: list[tuple[str, str]] = []
        self.calls: list[tuple[dict[str, Any], str, str | None, str, float | None]] = []
        self.call_replies: list[ToolCommandLineCodeResult] = []

    @property
    def work_dir(self) -> Path:
        return self.root

    @property
    def max_output_bytes(self) -> int:
        return self.budget

    def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.root.mkdir(parents=True, exist_ok=True)
        self.started = True

    def stop(self) -> None:
        self.stopped.set()
        if self.hold is not None:
            self.hold.set()

    def cancel(self) -> bool:
        self.cancelled.set()
        if self.hold is not None:
            self.hold.set()
        return True

    def run(
        self,
        code: str,
        language: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
        keep_file: bool = False,
    ) -> BlockResult:
        self.runs.append({"code": code, "language": language, "timeout": timeout, "env": dict(env or {})})
        self.running.set()
        if self.hold is not None:
            self.hold.wait(30)
        if self.run_error is not None:
            raise self.run_error
        if self.results:
            return self.results.popleft()
        lang = resolve_language(language)
        if lang is None or lang.runner is None:
            raise InvalidInputError(f"unsupported language {language!r}")
        keep = filename_hint(code) is not None
        name = code_filename(code, lang) if keep else f"{SCRATCH_STEM}.{lang.extension}"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        interpreter = {"python": [sys.executable], "sh": ["sh"], "bash": ["bash"]}[lang.runner]
        run_env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            **(env or {}),
        }
        done = subprocess.run(
            [*interpreter, str(path)],
            cwd=self.root,
            env=run_env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if on_output is not None and done.stdout:
            on_output("stdout", done.stdout)
        cut = len(done.stdout) > self.budget
        out = (
            done.stdout[: self.budget // 2] + b"\n[... cut ...]\n" + done.stdout[-16:] if cut else done.stdout
        )
        return BlockResult(
            done.returncode,
            out.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
            truncated=cut,
            log_files=("/tmp/kx-logs/n.out", "/tmp/kx-logs/n.err") if cut else (),
            file=f"{self.root}/{name}" if keep else None,
        )

    def upload_file_content(
        self, relative_path: str, content: str | bytes, *, timeout: float | None = None
    ) -> str:
        _, rel = pod_relative(relative_path, [str(self.root)])
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return f"{self.root}/{rel}"

    def download_file(
        self, remote_path: str, local_path: Path, *, limits: TransferLimits | None = None
    ) -> Path:
        _, rel = pod_relative(remote_path, [str(self.root), "/tmp/kx-logs"])
        source = self.root / rel
        if not source.exists():
            raise RemoteNotFoundError(f"{rel!r} does not exist in pod {self.pod_name}")
        if limits is not None and source.stat().st_size > limits.max_total_bytes:
            raise TransferError(f"the download exceeds {limits.max_total_bytes} bytes")
        shutil.copyfile(source, local_path)
        return local_path

    def install_pod_dispatcher(self, *, default_module: str, runner_filename: str) -> str:
        self.installs.append((default_module, runner_filename))
        return f"{self.root}/{runner_filename}"

    def execute_tool_function(
        self,
        arguments: dict[str, Any],
        func_name: str,
        *,
        module: str | None = None,
        runner_script: str = "executor.py",
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> ToolCommandLineCodeResult:
        self.calls.append((arguments, func_name, module, runner_script, timeout))
        return self.call_replies.pop(0)


def as_sandbox(sb: FakeSandbox) -> Sandbox:
    """The fake, typed as the interface it stands for (mypy checks that it conforms)."""
    return sb
