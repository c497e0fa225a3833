"""The work_dir mirror: the host directory kept in step with the pod's workspace."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path, PurePosixPath

from .._cluster.manifest import CONTAINER
from .._exec.languages import validate_relative_path
from .._exec.tar import DEFAULT_EXCLUDES
from ..errors import TransferError, UnsafePathError
from ..executor import KubernetesCommandLineCodeExecutor

logger = logging.getLogger(__name__)

# In-pod helpers: fixed text; the directory arrives on stdin.
LIST_SCRIPT = """
import os, stat, sys
root = sys.stdin.readline().rstrip("\\n")
out = sys.stdout.buffer
for top, dirs, files in os.walk(root):
    for name in files:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            rel = os.fsencode(os.path.relpath(path, root))
            out.write(b"%d %d " % (st.st_size, st.st_mtime_ns) + rel + b"\\0")
"""
# Images without python: find + stat (mtime in whole seconds, so a same-size rewrite within the
# second of the last look is missed there).
LIST_SHELL = """py=$(command -v python3 || command -v python || true)
if [ -n "$py" ]; then exec "$py" -c "$1"; fi
IFS= read -r root || exit 97
cd -- "$root" || exit 1
find . -type f | while IFS= read -r f; do
  s=$(stat -c '%s %Y' -- "$f" 2>/dev/null) || continue
  printf '%s %s000000000 %s\\0' "${s% *}" "${s#* }" "${f#./}"
done
"""

FileState = tuple[int, int]  # (size, mtime_ns)


class WorkDirMirror:
    """What we last saw in the pod and what we last wrote on the host, per file; ``root`` is the
    host directory, ``pod_work_dir`` the pod's workspace."""

    def __init__(self, pod_work_dir: str) -> None:
        self.pod_work_dir = pod_work_dir
        self.pod_state: dict[str, FileState] = {}
        self.host_state: dict[str, FileState] = {}

    def reset(self) -> None:
        """A new pod: nothing seen, nothing written."""
        self.pod_state, self.host_state = {}, {}

    def upload(self, executor: KubernetesCommandLineCodeExecutor, root: Path) -> None:
        """Upload ``root`` to the new pod; what the pod already had (an attached pod, a shared
        volume) comes down, ours is known."""
        uploaded = executor.upload_from_disk(root, exclude=DEFAULT_EXCLUDES)
        base = PurePosixPath(self.pod_work_dir)
        for pod_path in uploaded:
            rel = PurePosixPath(pod_path).relative_to(base).as_posix()
            st = (root / rel).stat()
            self.host_state[rel] = (st.st_size, st.st_mtime_ns)
        listing = self.list_pod(executor)
        self.pod_state = {rel: state for rel, state in listing.items() if rel in self.host_state}
        self.mirror_down(executor, root, listing)

    def list_pod(self, executor: KubernetesCommandLineCodeExecutor) -> dict[str, FileState]:
        """Regular files under the pod's workspace: relative path -> (size, mtime_ns)."""
        done = executor.kubectl.run(
            [
                "exec",
                "-i",
                executor.pod_name,
                "-c",
                CONTAINER,
                "--",
                "sh",
                "-c",
                LIST_SHELL,
                "kx",
                LIST_SCRIPT,
            ],
            stdin=self.pod_work_dir.encode() + b"\n",
            timeout=120.0,
            check=False,
        )
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()[-500:]
            raise TransferError(f"cannot list the workspace of pod {executor.pod_name}: {detail}")
        listing: dict[str, FileState] = {}
        for record in done.stdout.split(b"\0"):
            if not record:
                continue
            size, mtime, raw = record.split(b" ", 2)
            name = os.fsdecode(raw)
            try:
                rel = validate_relative_path(name)
            except UnsafePathError:
                logger.warning("not mirroring %r from pod %s: unsafe name", name, executor.pod_name)
                continue
            if rel != name:
                continue
            listing[rel] = (int(size), int(mtime))
        return listing

    def sync(self, executor: KubernetesCommandLineCodeExecutor, root: Path) -> None:
        """Bring what changed in the pod down to ``root``."""
        self.mirror_down(executor, root, self.list_pod(executor))

    def mirror_down(
        self, executor: KubernetesCommandLineCodeExecutor, root: Path, listing: dict[str, FileState]
    ) -> None:
        """Download what changed in the pod since the last look; remove on the host what the pod
        removed, unless the host copy changed since we wrote it."""
        for rel, state in sorted(listing.items()):
            if self.pod_state.get(rel) == state:
                continue
            target = self.safe_target(root, rel)
            if target is None:
                continue
            executor.download_file(rel, target)
            st = target.stat()
            self.host_state[rel] = (st.st_size, st.st_mtime_ns)
        for rel in set(self.pod_state) - set(listing):
            path = root / rel
            known = self.host_state.pop(rel, None)
            if self.safe_target(root, rel) is None:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and known == (st.st_size, st.st_mtime_ns):
                path.unlink()
        self.pod_state = dict(listing)

    @staticmethod
    def safe_target(root: Path, rel: str) -> Path | None:
        """``root/rel`` when no existing component below ``root`` is a symlink or a non-directory
        (so the write stays inside ``root``); None (logged) otherwise."""
        current = root
        parts = PurePosixPath(rel).parts
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink() or (current.exists() and not current.is_dir()):
                logger.warning("not mirroring %s: %s is not a plain directory on this machine", rel, current)
                return None
        target = current / parts[-1]
        if target.is_symlink() or target.is_dir():
            logger.warning("not mirroring %s: it is a link or a directory on this machine", rel)
            return None
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, os.path.realpath(target.parent)]) != real_root:
            return None
        return target
