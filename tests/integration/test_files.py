"""Files in and out of the pod through the real kubectl (emulator or a real cluster)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import (
    CodeBlock,
    KubernetesCommandLineCodeExecutor,
    RemoteNotFoundError,
    TransferError,
    UnsafePathError,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ALL_BYTES = bytes(range(256))

POD_LISTING = """
import hashlib, json, os, stat, sys
root = sys.argv[1] if len(sys.argv) > 1 else {root!r}
found = {{}}
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        if stat.S_ISREG(st.st_mode):
            found[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
        else:
            found[rel] = "dir" if stat.S_ISDIR(st.st_mode) else "other"
print(json.dumps(found))
"""


def pod_tree(executor: KubernetesCommandLineCodeExecutor, root: str | None = None) -> dict[str, str]:
    """{relative path: sha256 | "dir" | "other"} under ``root`` (default work_dir), as the pod sees it."""
    code = POD_LISTING.format(root=root or str(executor.work_dir))
    result = executor.execute_code_blocks([CodeBlock(code, "python")])
    assert result.exit_code == 0, result.output
    listing: dict[str, str] = json.loads(result.stdout)
    return {k: v for k, v in listing.items() if not k.startswith("tmp_code_")}


def pod_sh(executor: KubernetesCommandLineCodeExecutor, script: str) -> str:
    result = executor.execute_code_blocks([CodeBlock(script, "sh")])
    assert result.exit_code == 0, result.output
    return result.stdout


def local_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def test_binary_round_trip_with_checksum(executor: KubernetesCommandLineCodeExecutor, tmp_path: Path) -> None:
    data = ALL_BYTES * 64 + b"\r\n\x00EOF\n" + ALL_BYTES[::-1]
    digest = hashlib.sha256(data).hexdigest()
    path = executor.upload_file_content("bin/all bytes.bin", data)
    assert path == f"{executor.work_dir}/bin/all bytes.bin"
    assert pod_tree(executor)["bin/all bytes.bin"] == digest
    back = executor.download_file(path, tmp_path / "back.bin")
    assert back.read_bytes() == data
    text_path = executor.upload_file_content("text/ünï.txt", "héllo $HOME `id`\nEOF\n")
    assert pod_sh(executor, f"cat '{text_path}'") == "héllo $HOME `id`\nEOF\n"


def test_tree_upload_skips_like_the_seed_and_downloads_back(
    executor: KubernetesCommandLineCodeExecutor, tmp_path: Path
) -> None:
    tree = tmp_path / "sample_pkg"
    shutil.copytree(FIXTURES / "sample_pkg", tree)
    (tree / ".env").write_text("SECRET=1\n")
    (tree / "analytics" / "__pycache__").mkdir(exist_ok=True)
    (tree / "analytics" / "__pycache__" / "stats.cpython-311.pyc").write_bytes(b"\x00junk")
    paths = executor.upload_from_disk(tree, remote_prefix="proj")
    expected = {
        k: v for k, v in local_tree(tree).items() if v != "dir" and ".env" not in k and "__pycache__" not in k
    }
    assert sorted(paths) == sorted(f"{executor.work_dir}/proj/{rel}" for rel in expected)
    in_pod = {k: v for k, v in pod_tree(executor, f"{executor.work_dir}/proj").items() if v != "dir"}
    assert in_pod == expected  # binary data file included, byte for byte
    files = executor.download_dir("proj", tmp_path / "back")
    assert len(files) == len(expected)
    assert {k: v for k, v in local_tree(tmp_path / "back").items() if v != "dir"} == expected


def test_upload_of_escaping_path_is_refused_with_nothing_written(
    executor: KubernetesCommandLineCodeExecutor, tmp_path: Path
) -> None:
    executor.upload_file_content("keep.txt", "keep")
    work_before = pod_tree(executor)
    parent_before = pod_sh(executor, f"ls -a '{executor.work_dir}/..'")
    (tmp_path / "f.txt").write_text("x")
    for bad in ("../evil.txt", "a/../../evil.txt", "/etc/evil.txt", "/tmp/evil.txt", "a\nb.txt", "a\x00b"):
        with pytest.raises(UnsafePathError):
            executor.upload_file_content(bad, "pwned")
        with pytest.raises(UnsafePathError):
            executor.upload_from_disk(tmp_path / "f.txt", remote_prefix=bad)
    assert pod_tree(executor) == work_before
    assert pod_sh(executor, f"ls -a '{executor.work_dir}/..'") == parent_before
    assert pod_sh(executor, "ls /tmp/evil.txt /etc/evil.txt 2>/dev/null || true") == ""


def test_failed_upload_writes_none_of_its_files(
    executor: KubernetesCommandLineCodeExecutor, tmp_path: Path
) -> None:
    executor.upload_file_content("a.txt", "old a")
    pod_sh(executor, f"mkdir -p '{executor.work_dir}/b.txt'")
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.txt").write_text("new a")
    (tree / "b.txt").write_text("cannot land: a directory is there")
    before = pod_tree(executor)
    with pytest.raises(TransferError, match=r"b\.txt is a directory"):
        executor.upload_from_disk(tree)
    assert pod_tree(executor) == before  # a.txt unchanged, no staging directory left


def test_download_refuses_links_and_special_files_from_the_pod(
    executor: KubernetesCommandLineCodeExecutor, tmp_path: Path
) -> None:
    work = executor.work_dir
    pod_sh(
        executor,
        f"mkdir -p '{work}/out/sub' && echo ok > '{work}/out/sub/plain.txt' && "
        f"ln -s /etc '{work}/out/etc_link' && ln -s /etc/passwd '{work}/out/passwd_link' && "
        f"mkfifo '{work}/out/pipe'",
    )
    with pytest.raises(UnsafePathError, match=r"symlink|fifo"):
        executor.download_dir("out", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    files = executor.download_dir("out", tmp_path / "dest", skip_unsafe=True)
    assert files == [tmp_path / "dest" / "sub" / "plain.txt"]
    assert not any(p.is_symlink() for p in (tmp_path / "dest").rglob("*"))
    with pytest.raises(TransferError, match="symbolic link"):
        executor.download_file("out/passwd_link", tmp_path / "passwd")
    assert not (tmp_path / "passwd").exists()


def test_download_of_missing_remote_is_a_clear_error(
    executor: KubernetesCommandLineCodeExecutor, tmp_path: Path
) -> None:
    with pytest.raises(RemoteNotFoundError, match="does not exist"):
        executor.download_file("no/such/file.txt", tmp_path / "x")
    executor.upload_file_content("plain.txt", "x")
    with pytest.raises(TransferError, match="not a directory"):
        executor.download_dir("plain.txt", tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_run_logs_can_be_downloaded(executor: KubernetesCommandLineCodeExecutor, tmp_path: Path) -> None:
    ex = executor
    result = ex.execute_code_blocks([CodeBlock("import sys\nsys.stdout.write('y' * 5_000_000)", "python")])
    assert result.truncated and result.log_files
    local = ex.download_file(result.log_files[0], tmp_path / "full.out")
    assert local.read_bytes() == b"y" * 5_000_000


def test_image_without_python_uses_tar_and_sha256sum(
    executor_factory: ExecutorFactory, tmp_path: Path
) -> None:
    # No python in this image: the in-pod side must manage with tar, sha256sum, mkfifo and tee.
    ex = executor_factory(image="busybox")  # the tag a real cluster has imported
    assert (
        ex.execute_code_blocks([CodeBlock("command -v python3 python || echo none", "sh")]).stdout == "none\n"
    )
    path = ex.upload_file_content("data/all.bin", ALL_BYTES * 100)
    assert ex.download_file(path, tmp_path / "all.bin").read_bytes() == ALL_BYTES * 100
    ex.upload_from_disk(FIXTURES / "sample_pkg", remote_prefix="tree")
    ex.download_dir("tree", tmp_path / "tree")
    assert (tmp_path / "tree/analytics/data/blob.bin").read_bytes() == (
        FIXTURES / "sample_pkg/analytics/data/blob.bin"
    ).read_bytes()


# -- 100 MB, streamed: measured in a separate client process so the emulator's memory is not counted --------

BIG_CLIENT = textwrap.dedent(
    """
    import hashlib, json, resource, sys, time
    from pathlib import Path
    from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor

    kwargs, big, back = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def rss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with KubernetesCommandLineCodeExecutor(**kwargs) as ex:
        ex.upload_file_content("warm.bin", b"w" * 1_000_000)  # imports, threads, buffers: warm
        ex.download_file("warm.bin", back.with_name("warm.bin"))
        base = rss_mb()
        t0 = time.monotonic()
        [remote] = ex.upload_from_disk(big, remote_prefix="big")
        t1 = time.monotonic()
        after_up = rss_mb()
        ex.download_file(remote, back)
        t2 = time.monotonic()
        after_down = rss_mb()
        check = ex.execute_code_blocks([CodeBlock(
            "import hashlib\\nh = hashlib.sha256()\\nf = open(%r, 'rb')\\n"
            "for b in iter(lambda: f.read(1 << 20), b''):\\n    h.update(b)\\nprint(h.hexdigest())" % remote,
            "python")])
    print(json.dumps({"base_mb": base, "after_upload_mb": after_up, "after_download_mb": after_down,
                      "upload_s": t1 - t0, "download_s": t2 - t1, "pod_sha256": check.stdout.strip()}))
    """
)


def test_100_mb_up_and_down_streams_in_bounded_memory(cluster: Cluster, tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as fh:
        block = os.urandom(1 << 20)
        for i in range(size >> 20):
            chunk = bytes([i % 256]) + block[1:]
            digest.update(chunk)
            fh.write(chunk)
    back = tmp_path / "back.bin"
    kwargs = {**cluster.executor_kwargs(), "timeout": 120}
    done = subprocess.run(
        [sys.executable, "-c", BIG_CLIENT, json.dumps(kwargs), str(big), str(back)],
        capture_output=True,
        env={**os.environ, **cluster.env},
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    print(
        f"100 MiB: upload {size / 2**20 / report['upload_s']:.1f} MiB/s, "
        f"download {size / 2**20 / report['download_s']:.1f} MiB/s, rss {report}"
    )
    assert report["pod_sha256"] == digest.hexdigest()
    assert back.stat().st_size == size
    back_digest = hashlib.sha256()
    with back.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            back_digest.update(chunk)
    assert back_digest.hexdigest() == digest.hexdigest()
    # Streaming, not buffering: the client process grew by far less than the file.
    assert report["after_upload_mb"] - report["base_mb"] < 30
    assert report["after_download_mb"] - report["base_mb"] < 30
