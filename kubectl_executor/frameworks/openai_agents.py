"""An OpenAI Agents SDK sandbox client whose sessions are Kubernetes pods (through kubectl).

``Runner.run(SandboxAgent(...), prompt, run_config=RunConfig(sandbox=SandboxRunConfig(
client=KubectlSandboxClient(), options=KubectlSandboxClientOptions(image="python:3-slim"))))``:
each sandbox session is one pod; the SDK's shell and filesystem capabilities exec in it, read and
write its files, and its session state names the pod so that ``resume`` reattaches to it.
Files move only under the executor's work_dir, which is the manifest's root (``/workspace``).
"""

from __future__ import annotations

import asyncio
import io
import math
import shlex
import tarfile
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..defaults import IMAGE
from . import require

require("agents.sandbox", "openai-agents")

from agents.sandbox.errors import (  # noqa: E402
    ExecTimeoutError,
    WorkspaceArchiveReadError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
)
from agents.sandbox.manifest import Manifest  # noqa: E402
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession  # noqa: E402
from agents.sandbox.session.sandbox_client import BaseSandboxClient, BaseSandboxClientOptions  # noqa: E402
from agents.sandbox.session.sandbox_session import SandboxSession  # noqa: E402
from agents.sandbox.session.sandbox_session_state import SandboxSessionState  # noqa: E402
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot  # noqa: E402
from agents.sandbox.types import ExecResult, User  # noqa: E402

from ..boundary import ClusterAccess, PodShape  # noqa: E402
from ..errors import RemoteNotFoundError, TransferError  # noqa: E402
from ..executor import KubernetesCommandLineCodeExecutor  # noqa: E402

__all__ = [
    "KubectlSandboxClient",
    "KubectlSandboxClientOptions",
    "KubectlSandboxSession",
    "KubectlSandboxState",
]


class KubectlSandboxClientOptions(BaseSandboxClientOptions):
    """Where the pod runs, in the SDK's options form (serialised into a session's state, so no
    secrets): they map onto the one ClusterAccess and PodShape, as the seed's keywords do."""

    type: Literal["kubectl"] = "kubectl"
    image: str = IMAGE
    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    kubectl: str | None = None

    def executor_kwargs(self, work_dir: str) -> dict[str, Any]:
        """The executor's ``access=`` and ``pod=`` (``work_dir``: the manifest's root)."""
        return {
            "access": ClusterAccess.pick(self.model_dump(exclude={"type", "image"})),
            "pod": PodShape(image=self.image, work_dir=work_dir),
        }


class KubectlSandboxState(SandboxSessionState):
    """What resume needs: the pod's name and how to reach it (no secrets)."""

    type: Literal["kubectl"] = "kubectl"
    pod_name: str
    options: KubectlSandboxClientOptions


class KubectlSandboxSession(BaseSandboxSession):
    """One pod: exec, read and write go through the executor's public API."""

    state: KubectlSandboxState

    def __init__(self, *, state: KubectlSandboxState, executor: KubernetesCommandLineCodeExecutor) -> None:
        self.state = state
        self.executor = executor

    async def _exec_internal(self, *command: str | Path, timeout: float | None = None) -> ExecResult:
        # The SDK hands over an argv; bash gets it back word for word (each word quoted).
        line = shlex.join(str(part) for part in command)
        limit = None if timeout is None else max(1, math.ceil(timeout))
        result = await asyncio.to_thread(self.executor.run, line, "bash", timeout=limit)
        if result.timed_out:
            raise ExecTimeoutError(command=command, timeout_s=timeout)
        return ExecResult(
            stdout=result.stdout.encode(), stderr=result.stderr.encode(), exit_code=result.exit_code
        )

    def _relative(self, path: Path | str) -> str:
        pure = PurePosixPath(str(path))
        return str(pure.relative_to(str(self.executor.work_dir)) if pure.is_absolute() else pure)

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        def fetch() -> bytes:
            with tempfile.TemporaryDirectory(prefix="kx-openai-") as scratch:
                return self.executor.download_file(self._relative(path), Path(scratch) / "f").read_bytes()

        try:
            return io.BytesIO(await asyncio.to_thread(fetch))
        except (RemoteNotFoundError, ValueError) as exc:
            raise WorkspaceReadNotFoundError(path=path, cause=exc) from exc
        except TransferError as exc:
            raise WorkspaceArchiveReadError(path=path, cause=exc) from exc

    async def write(self, path: Path, data: io.IOBase, *, user: str | User | None = None) -> None:
        payload = data.read()
        content = payload.encode() if isinstance(payload, str) else bytes(payload)
        try:
            await asyncio.to_thread(self.executor.upload_file_content, self._relative(path), content)
        except (TransferError, ValueError) as exc:
            raise WorkspaceArchiveWriteError(path=path, cause=exc) from exc

    async def running(self) -> bool:
        return await asyncio.to_thread(self.executor.is_pod_running_with_image) is not None

    async def persist_workspace(self) -> io.IOBase:
        """work_dir as a tar stream with workspace-relative member names."""

        def pack() -> bytes:
            with tempfile.TemporaryDirectory(prefix="kx-openai-") as scratch:
                tree = Path(scratch) / "w"
                self.executor.download_dir("", tree)
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as tar:
                    for item in sorted(tree.rglob("*")):
                        tar.add(item, arcname=item.relative_to(tree).as_posix(), recursive=False)
                return buffer.getvalue()

        return io.BytesIO(await asyncio.to_thread(pack))

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        """Unpack a tar stream from :meth:`persist_workspace` into work_dir."""

        def unpack() -> None:
            with tempfile.TemporaryDirectory(prefix="kx-openai-") as scratch:
                with tarfile.open(fileobj=io.BytesIO(data.read()), mode="r:*") as tar:
                    tar.extractall(scratch, filter="data")
                self.executor.upload_from_disk(scratch, exclude=())

        await asyncio.to_thread(unpack)

    async def shutdown(self) -> None:
        """The pod stays until the client's ``delete`` (so that ``resume`` can find it)."""


class KubectlSandboxClient(BaseSandboxClient[KubectlSandboxClientOptions]):
    """Creates, deletes and resumes pod-backed sandbox sessions."""

    backend_id = "kubectl"

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: KubectlSandboxClientOptions,
    ) -> SandboxSession:
        manifest = manifest if manifest is not None else Manifest()
        self._validate_manifest_for_create(manifest)
        executor = await asyncio.to_thread(
            KubernetesCommandLineCodeExecutor,
            keep_pod=True,
            **options.executor_kwargs(manifest.root),
        )
        session_id = uuid.uuid4()
        state = KubectlSandboxState(
            session_id=session_id,
            manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            pod_name=executor.pod_name,
            options=options,
        )
        return self._wrap_session(KubectlSandboxSession(state=state, executor=executor))

    async def delete(self, session: SandboxSession) -> SandboxSession:
        inner = session._inner
        if not isinstance(inner, KubectlSandboxSession):
            raise TypeError("KubectlSandboxClient.delete expects a KubectlSandboxSession")
        # The pod was made with keep_pod=True (a later process may resume it), so it is deleted
        # by name here, for created and resumed sessions alike.
        name = inner.state.pod_name
        await asyncio.to_thread(inner.executor.kubectl.run, ["delete", "pod", name, "--ignore-not-found"])
        await asyncio.to_thread(inner.executor.stop)
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        if not isinstance(state, KubectlSandboxState):
            raise TypeError("KubectlSandboxClient.resume expects a KubectlSandboxState")
        executor = await asyncio.to_thread(
            KubernetesCommandLineCodeExecutor,
            pod_name=state.pod_name,
            attach=True,
            **state.options.executor_kwargs(state.manifest.root),
        )
        return self._wrap_session(KubectlSandboxSession(state=state, executor=executor))

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return KubectlSandboxState.model_validate(payload)
