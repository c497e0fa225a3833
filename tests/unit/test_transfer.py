"""tar.py and transfer.py: path confinement, the upload stream and its in-pod script, safe extraction of hostile tar.

The in-pod scripts run with the host's /bin/sh (a local process, never kubectl); the executor methods
run on the fake kubectl runner.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kx_fakes import ExecReply, FakeProcess, FakeRunner

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor._exec import tar as tar_module
from kubectl_executor._exec import transfer as T
from kubectl_executor._exec.protocol import LOG_DIR
from kubectl_executor._exec.tar import (
    DEFAULT_EXCLUDES,
    HashingReader,
    TransferLimits,
    UploadItem,
    extract_tar_stream,
    parse_upload_reply,
    plan_upload,
    pod_relative,
    write_upload_tar,
)
from kubectl_executor.errors import InvalidInputError, NotFoundError, TransferError, UnsafePathError

Make = Callable[..., KubernetesCommandLineCodeExecutor]
WORK = "/workspace"
ALL_BYTES = bytes(range(256))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- pod paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a.py", (WORK, "a.py")),
        ("pkg/./sub/m.py", (WORK, "pkg/sub/m.py")),
        ("/workspace/pkg/m.py", (WORK, "pkg/m.py")),
        (Path("pkg") / "m.py", (WORK, "pkg/m.py")),
        ("dir with space/é.txt", (WORK, "dir with space/é.txt")),
        (f"{LOG_DIR}/abc.out", (LOG_DIR, "abc.out")),
    ],
)
def test_pod_relative_accepts_paths_inside(given: Any, expected: tuple[str, str]) -> None:
    assert pod_relative(given, [WORK, LOG_DIR]) == expected


@pytest.mark.parametrize(
    "given",
    ["../x", "a/../../x", "a/..", "/etc/passwd", "/workspace2/x", "/workspace/../etc/x", "a\x00b", "a\nb", "a\rb",
     "", "  ", "~/x", "/workspace"],
)  # fmt: skip
def test_pod_relative_refuses_escapes(given: str) -> None:
    with pytest.raises(UnsafePathError):
        pod_relative(given, [WORK])


def test_pod_relative_root_only_when_allowed() -> None:
    assert pod_relative("", [WORK], allow_root=True) == (WORK, ".")
    assert pod_relative("/workspace", [WORK], allow_root=True) == (WORK, ".")
    with pytest.raises(UnsafePathError):
        pod_relative(".", [WORK])


# -- planning an upload ---------------------------------------------------------------------------------------


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "m.py").write_text("X = 1\n")
    (root / "pkg" / "sub" / "data.bin").write_bytes(ALL_BYTES)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\x00")
    return root


def test_plan_skips_dot_names_and_pycache_like_the_seed(src: Path) -> None:
    items = plan_upload(src, "", DEFAULT_EXCLUDES)
    assert [i.rel for i in items] == ["run.sh", "pkg/__init__.py", "pkg/sub/data.bin", "pkg/sub/m.py"]
    assert {i.rel: i.executable for i in items}["run.sh"] is True


def test_plan_with_prefix_and_custom_excludes(src: Path) -> None:
    items = plan_upload(src, "proj/v1", ("*.bin", "__pycache__"))
    rels = [i.rel for i in items]
    assert "proj/v1/.env" in rels and "proj/v1/.git/config" in rels
    assert "proj/v1/pkg/sub/data.bin" not in rels
    assert not any("__pycache__" in r for r in rels)


def test_plan_single_file_and_excluded_single_file(src: Path) -> None:
    assert [i.rel for i in plan_upload(src / "pkg" / "sub" / "m.py", "x", DEFAULT_EXCLUDES)] == ["x/m.py"]
    assert plan_upload(src / ".env", "", DEFAULT_EXCLUDES) == []


def test_plan_does_not_follow_directory_links_and_skips_fifos(src: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    (src / "linked_dir").symlink_to(outside)
    (src / "linked_file.txt").symlink_to(outside / "secret.txt")
    os.mkfifo(src / "pipe")
    rels = [i.rel for i in plan_upload(src, "", DEFAULT_EXCLUDES)]
    assert "linked_dir/secret.txt" not in rels
    assert "pipe" not in rels
    assert "linked_file.txt" in rels  # a file symlink is read through, as the seed did


def test_plan_refuses_names_the_pod_cannot_take(src: Path) -> None:
    (src / "bad\nname.py").write_text("")
    with pytest.raises(UnsafePathError):
        plan_upload(src, "", DEFAULT_EXCLUDES)


def test_plan_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        plan_upload(tmp_path / "nope", "", DEFAULT_EXCLUDES)


# -- the upload stream through the real in-pod script (host sh) ------------------------------------------------


def upload_stream(items: list[UploadItem], work: Path, nonce: str = "n0nce") -> tuple[bytes, dict[str, str]]:
    buf = io.BytesIO()
    buf.write(f"KXU1 {nonce}\n{work}\n".encode())
    sums = write_upload_tar(items, buf)
    return buf.getvalue(), sums


def run_script(
    script: str, stdin: bytes, path: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": path or os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": "/nonexistent"}
    return subprocess.run(
        ["/bin/sh", "-c", script, "kx", T.TAR_HELPER],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    w.mkdir()
    return w


def test_upload_round_trip_binary_with_sums(src: Path, work: Path) -> None:
    items = plan_upload(src, "dst", DEFAULT_EXCLUDES)
    stream, sums = upload_stream(items, work)
    done = run_script(T.UPLOAD_SCRIPT, stream)
    assert done.returncode == 0, done.stderr
    pod_sums, count = parse_upload_reply(done.stdout, "n0nce")
    assert count == 4
    assert pod_sums == sums
    assert (work / "dst/pkg/sub/data.bin").read_bytes() == ALL_BYTES
    assert sums["dst/pkg/sub/data.bin"] == sha(ALL_BYTES)
    assert os.access(work / "dst/run.sh", os.X_OK)
    assert tree_listing(work) == [
        "dst", "dst/pkg", "dst/pkg/__init__.py", "dst/pkg/sub", "dst/pkg/sub/data.bin",
        "dst/pkg/sub/m.py", "dst/run.sh",
    ]  # fmt: skip  # no staging directory left behind


def tampered_sums(stream: bytes, rel: str) -> bytes:
    """The same upload with one checksum in the list replaced (as if bytes changed in transit)."""
    header, _, body = stream.partition(b"\n")
    work_line, _, tar_bytes = body.partition(b"\n")
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == tar_module.SUM_LIST:
                data = re.sub(
                    rb"[0-9a-f]{64} " + re.escape(rel.encode()), b"0" * 64 + b" " + rel.encode(), data
                )
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return header + b"\n" + work_line + b"\n" + out.getvalue()


def test_upload_checksum_mismatch_writes_nothing(work: Path) -> None:
    (work / "keep.txt").write_text("old")
    items = [UploadItem("keep.txt", data=b"new"), UploadItem("other.bin", data=ALL_BYTES)]
    stream, _ = upload_stream(items, work)
    done = run_script(T.UPLOAD_SCRIPT, tampered_sums(stream, "other.bin"))
    assert done.returncode == 1
    assert b"checksum mismatch for other.bin" in done.stderr
    assert (work / "keep.txt").read_text() == "old"
    assert tree_listing(work) == ["keep.txt"]


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_upload_stream_cut_short_writes_nothing(work: Path, cut: float) -> None:
    (work / "big.bin").write_bytes(b"old")
    items = [UploadItem("big.bin", data=os.urandom(200_000)), UploadItem("small.txt", data=b"s")]
    stream, _ = upload_stream(items, work)
    done = run_script(T.UPLOAD_SCRIPT, stream[: int(len(stream) * cut)])
    assert done.returncode != 0
    assert b"__KX_UPLOADED_" not in done.stdout
    assert (work / "big.bin").read_bytes() == b"old"
    assert tree_listing(work) == ["big.bin"]


def test_upload_refuses_to_replace_a_directory_with_a_file(work: Path) -> None:
    (work / "d").mkdir()
    stream, _ = upload_stream([UploadItem("a.txt", data=b"a"), UploadItem("d", data=b"x")], work)
    done = run_script(T.UPLOAD_SCRIPT, stream)
    assert done.returncode == 1
    assert b"d is a directory" in done.stderr
    assert not (work / "a.txt").exists()


def test_upload_replaces_a_symlink_instead_of_writing_through_it(work: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (work / "link").symlink_to(outside)
    stream, _ = upload_stream([UploadItem("link", data=b"file now")], work)
    done = run_script(T.UPLOAD_SCRIPT, stream)
    assert done.returncode == 0, done.stderr
    assert (work / "link").read_bytes() == b"file now"
    assert not (work / "link").is_symlink()
    assert list(outside.iterdir()) == []


def bin_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with the host's tools except ``missing`` (an image that lacks them)."""
    bindir = tmp_path / f"bin-without-{'-'.join(missing)}"
    bindir.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name in missing or (bindir / name).exists():
                continue
            (bindir / name).symlink_to(os.path.join(d, name))
    return str(bindir)


@pytest.mark.parametrize("missing", [("tar",), ("sha256sum",), ("tar", "sha256sum")])
def test_upload_python_fallback_without_tar_or_sha256sum(
    src: Path, work: Path, tmp_path: Path, missing: tuple[str, ...]
) -> None:
    items = plan_upload(src, "", DEFAULT_EXCLUDES)
    stream, sums = upload_stream(items, work)
    done = run_script(T.UPLOAD_SCRIPT, stream, path=bin_without(tmp_path, *missing))
    assert done.returncode == 0, done.stderr
    assert parse_upload_reply(done.stdout, "n0nce") == (sums, 4)
    assert (work / "pkg/sub/data.bin").read_bytes() == ALL_BYTES


@pytest.mark.parametrize("missing", [(), ("tar",), ("sha256sum",)])
def test_download_script_sends_tar_and_its_checksum(
    src: Path, work: Path, tmp_path: Path, missing: tuple[str, ...]
) -> None:
    path = bin_without(tmp_path, *missing) if missing else None
    done = run_script(T.DOWNLOAD_SCRIPT, f"KXD1 abc dir\n{src.parent}\n{src.name}\n".encode(), path=path)
    assert done.returncode == 0, done.stderr
    assert tar_module.parse_sent_marker(done.stderr, "abc") == (0, sha(done.stdout))
    reader = HashingReader(io.BytesIO(done.stdout), 10**9)
    got = extract_tar_stream(reader, tmp_path / "out", TransferLimits())
    assert (tmp_path / "out/pkg/sub/data.bin").read_bytes() == ALL_BYTES
    assert len(got.files) == 7  # everything, dot-names included: downloads exclude nothing


@pytest.mark.parametrize(
    ("kind", "rel", "code", "message"),
    [
        ("file", "nope.txt", 3, b"does not exist"),
        ("file", "pkg", 4, b"not a regular file"),
        ("dir", "run.sh", 4, b"not a directory"),
        ("file", "lnk", 4, b"symbolic link"),
    ],
)
def test_download_script_refusals(src: Path, kind: str, rel: str, code: int, message: bytes) -> None:
    (src / "lnk").symlink_to("/etc/passwd")
    done = run_script(T.DOWNLOAD_SCRIPT, f"KXD1 abc {kind}\n{src}\n{rel}\n".encode())
    assert done.returncode == code
    assert message in done.stderr
    assert done.stdout == b""


# -- hostile archives -----------------------------------------------------------------------------------------


@dataclass
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644
    pax: dict[str, str] = field(default_factory=dict)


def make_tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.linkname = m.linkname
            info.mode = m.mode
            info.pax_headers = m.pax
            if m.type == tarfile.REGTYPE:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def many(n: int) -> bytes:
    return make_tar([Member(f"f{i}", b"x") for i in range(n)])


def pax_bomb() -> bytes:
    return make_tar([Member("a" * 100_000, b"x")])  # a 100 kB name travels in a pax header


SMALL = TransferLimits(max_total_bytes=10_000, max_members=50, max_header_bytes=16_384)

# (id, archive, error type, message fragment). Names aim at ../outside relative to the target.
HOSTILE: list[tuple[str, Callable[[Path], bytes], type[Exception], str]] = [
    ("dotdot", lambda o: make_tar([Member("../outside/pwned", b"x")]), UnsafePathError, "'..'"),
    ("nested-dotdot", lambda o: make_tar([Member("a/../../outside/pwned", b"x")]), UnsafePathError, "'..'"),
    ("absolute", lambda o: make_tar([Member(f"{o}/pwned", b"x")]), UnsafePathError, "absolute"),
    (
        "symlink-then-write-through",
        lambda o: make_tar([Member("esc", type=tarfile.SYMTYPE, linkname=str(o)), Member("esc/pwned", b"x")]),
        UnsafePathError,
        "symlink",
    ),
    (
        "relative-symlink",
        lambda o: make_tar([Member("esc", type=tarfile.SYMTYPE, linkname="../outside")]),
        UnsafePathError,
        "symlink",
    ),
    (
        "hardlink-to-passwd",
        lambda o: make_tar(
            [Member("pw", type=tarfile.LNKTYPE, linkname="/etc/passwd"), Member("pw", b"root::0")]
        ),
        UnsafePathError,
        "hardlink",
    ),
    ("char-device", lambda o: make_tar([Member("null", type=tarfile.CHRTYPE)]), UnsafePathError, "device"),
    ("block-device", lambda o: make_tar([Member("sda", type=tarfile.BLKTYPE)]), UnsafePathError, "device"),
    ("fifo", lambda o: make_tar([Member("pipe", type=tarfile.FIFOTYPE)]), UnsafePathError, "fifo"),
    ("10k-members", lambda o: many(10_000), TransferError, "more than 50 members"),
    ("member-over-cap", lambda o: make_tar([Member("big", b"x" * 20_000)]), TransferError, "exceeds 10000"),
    (
        "total-over-cap",
        lambda o: make_tar([Member(f"f{i}", b"x" * 3000) for i in range(4)]),
        TransferError,
        "exceeds 10000",
    ),
    ("pax-header-bomb", lambda o: pax_bomb(), TransferError, "metadata header"),
    ("duplicate-name", lambda o: make_tar([Member("a", b"1"), Member("a", b"2")]), UnsafePathError, "twice"),
    (
        "file-under-file",
        lambda o: make_tar([Member("a", b"1"), Member("a/b", b"2")]),
        UnsafePathError,
        "is a file",
    ),
    ("not-a-tar", lambda o: b"<html>500 Internal Server Error</html>" * 50, TransferError, "tar"),
    ("empty-stream", lambda o: b"", TransferError, "tar"),
    ("truncated", lambda o: make_tar([Member("a", b"x" * 5000)])[:2048], TransferError, ""),
]


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(target's parent, a sibling directory that must stay untouched)."""
    box = tmp_path / "box"
    outside = tmp_path / "outside"
    box.mkdir()
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    return box, outside


def untouched(tmp_path: Path) -> bool:
    outside = tmp_path / "outside"
    return tree_listing(outside) == ["sentinel"] and (outside / "sentinel").read_text() == "untouched"


@pytest.mark.parametrize(
    ("archive", "error", "fragment"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_extract_refuses_hostile_archives(
    tmp_path: Path,
    sandbox: tuple[Path, Path],
    archive: Callable[[Path], bytes],
    error: type[Exception],
    fragment: str,
) -> None:
    box, outside = sandbox
    passwd = Path("/etc/passwd").read_bytes()
    with pytest.raises((error, TransferError)) as info:
        extract_tar_stream(HashingReader(io.BytesIO(archive(outside)), 10**9), box / "dest", SMALL)
    assert isinstance(info.value, error)
    assert fragment in str(info.value)
    assert untouched(tmp_path)
    assert Path("/etc/passwd").read_bytes() == passwd
    assert not any(p.is_symlink() for p in box.rglob("*"))


def test_extract_skip_unsafe_leaves_links_out_and_stays_inside(
    tmp_path: Path, sandbox: tuple[Path, Path]
) -> None:
    box, outside = sandbox
    archive = make_tar(
        [
            Member("esc", type=tarfile.SYMTYPE, linkname=str(outside)),
            Member("esc/pwned", b"x"),
            Member("pw", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
            Member("pw", b"plain"),
            Member("pipe", type=tarfile.FIFOTYPE),
        ]
    )
    got = extract_tar_stream(io.BytesIO(archive), box / "dest", SMALL, skip_unsafe=True)
    assert got.skipped == ["esc", "pw", "pipe"]
    assert tree_listing(box / "dest") == ["esc", "esc/pwned", "pw"]
    assert (box / "dest" / "pw").read_bytes() == b"plain"
    assert not (box / "dest" / "esc").is_symlink()
    assert untouched(tmp_path)


def test_extract_sanitises_modes_and_accepts_good_trees(tmp_path: Path) -> None:
    archive = make_tar(
        [
            Member("./", type=tarfile.DIRTYPE, mode=0o777),
            Member("./bin/tool", b"#!", mode=0o4777),
            Member("./data/all.bin", ALL_BYTES, mode=0o600),
            Member("./data/", type=tarfile.DIRTYPE, mode=0o700),
            Member("./" + "n" * 200 + ".txt", b"long name"),  # pax path
            Member("./unicodé.txt", "ü".encode()),
        ]
    )
    got = extract_tar_stream(io.BytesIO(archive), tmp_path / "d", TransferLimits())
    assert stat_mode(tmp_path / "d/bin/tool") == 0o755
    assert stat_mode(tmp_path / "d/data/all.bin") == 0o644
    assert (tmp_path / "d/data/all.bin").read_bytes() == ALL_BYTES
    assert (tmp_path / "d/unicodé.txt").read_text() == "ü"
    assert got.total_bytes == 2 + 256 + 9 + 2
    assert len(got.files) == 4


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_hashing_reader_caps_the_raw_stream() -> None:
    reader = HashingReader(io.BytesIO(b"x" * 5000), cap=4096)
    with pytest.raises(TransferError, match="exceeds 4096"):
        while reader.read(1024):
            pass


def test_drain_refuses_trailing_data() -> None:
    archive = make_tar([Member("a", b"1")]) + b"\x00" * 512 + b"extra"
    reader = HashingReader(io.BytesIO(archive), 10**6)
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        list(tar)
    with pytest.raises(TransferError, match="after the end"):
        reader.drain(1 << 20)


# -- the executor methods on the fake kubectl ------------------------------------------------------------------


def test_upload_from_disk_one_exec_paths_never_on_argv(
    make_executor: Make, fake_runner: FakeRunner, src: Path, work: Path
) -> None:
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    paths = ex.upload_from_disk(src, remote_prefix="proj")
    assert paths == [
        f"{work}/proj/{r}" for r in ("run.sh", "pkg/__init__.py", "pkg/sub/data.bin", "pkg/sub/m.py")
    ]
    assert (work / "proj/pkg/sub/data.bin").read_bytes() == ALL_BYTES
    execs = [p for p in fake_runner.spawns if p.args[:1] == ["exec"]]
    assert len(execs) == 1
    assert not any("proj" in arg or "data.bin" in arg for arg in execs[0].argv)


def test_upload_file_content_str_and_bytes(make_executor: Make, fake_runner: FakeRunner, work: Path) -> None:
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    assert ex.upload_file_content("a/b.txt", "héllo\n") == f"{work}/a/b.txt"
    assert ex.upload_file_content(f"{work}/c.bin", ALL_BYTES) == f"{work}/c.bin"
    assert (work / "a/b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (work / "c.bin").read_bytes() == ALL_BYTES
    with pytest.raises(TypeError):
        ex.upload_file_content("x", 12)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["../evil.py", "/etc/evil.py", "a/../../evil.py", "ok\x00.py", "a\nb.py"])
def test_upload_of_escaping_path_is_refused_before_any_exec(
    make_executor: Make, fake_runner: FakeRunner, work: Path, tmp_path: Path, bad: str
) -> None:
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    before = len(fake_runner.spawns)
    with pytest.raises(UnsafePathError):
        ex.upload_file_content(bad, "x")
    with pytest.raises(UnsafePathError):
        ex.upload_from_disk(tmp_path / "ws", remote_prefix=bad)
    assert len(fake_runner.spawns) == before
    assert tree_listing(tmp_path) == ["fakebin", "fakebin/kubectl", "ws"]


def test_upload_local_read_error_kills_the_stream_and_commits_nothing(
    make_executor: Make, fake_runner: FakeRunner, src: Path, work: Path, mocker: Any
) -> None:
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    (work / "pkg").mkdir()
    (work / "pkg/__init__.py").write_text("old")
    real_read = tar_module._HashingFile.read
    calls = {"n": 0}

    def flaky(self: Any, size: int = -1) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk went away")
        return real_read(self, size)

    mocker.patch.object(tar_module._HashingFile, "read", flaky)
    with pytest.raises(TransferError, match="disk went away"):
        ex.upload_from_disk(src)
    assert fake_runner.spawns[-1].killed
    assert (work / "pkg/__init__.py").read_text() == "old"
    assert tree_listing(work) == ["pkg", "pkg/__init__.py"]


def test_upload_pod_complaint_is_a_transfer_error(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    fake_runner.other_exec = lambda proc: ExecReply(
        b"",
        stderr=b"kubectl-executor: cannot create /workspace\ncommand terminated with exit code 1\n",
        returncode=1,
    )
    with pytest.raises(TransferError, match="cannot create /workspace"):
        ex.upload_file_content("a.txt", "x")


def test_upload_without_confirmation_is_an_error(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()
    fake_runner.other_exec = lambda proc: ExecReply(b"", returncode=0)
    with pytest.raises(TransferError, match="did not confirm"):
        ex.upload_file_content("a.txt", "x")


def test_upload_sum_disagreement_is_an_error(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor()

    def lying_pod(proc: FakeProcess) -> ExecReply:
        nonce = bytes(proc.stdin).split(b"\n", 1)[0].split()[1].decode()
        return ExecReply(f"__KX_SUM__ {'0' * 64} a.txt\n__KX_UPLOADED_{nonce}__ 1\n".encode())

    fake_runner.other_exec = lying_pod
    with pytest.raises(TransferError, match="checksums differ"):
        ex.upload_file_content("a.txt", "x")


def pod_sending(
    archive: bytes, *, digest: str | None = None, rc: int = 0
) -> Callable[[FakeProcess], ExecReply]:
    """A (possibly hostile) pod answering a download: the tar on stdout, the marker on stderr."""

    def reply(proc: FakeProcess) -> ExecReply:
        nonce = bytes(proc.stdin).split(b"\n", 1)[0].split()[1].decode()
        marker = f"__KX_SENT_{nonce}__ {rc} {digest or sha(archive)}\n".encode()
        # Split the stream into chunks, as kubectl hands it over.
        chunks = [archive[i : i + 7000] for i in range(0, len(archive), 7000)]
        return ExecReply(chunks, stderr=marker)

    return reply


@pytest.mark.parametrize(
    ("archive", "error", "fragment"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_download_dir_from_hostile_pod_leaves_nothing(
    make_executor: Make,
    fake_runner: FakeRunner,
    tmp_path: Path,
    sandbox: tuple[Path, Path],
    archive: Callable[[Path], bytes],
    error: type[Exception],
    fragment: str,
) -> None:
    box, outside = sandbox
    ex = make_executor()
    ex.transfer_limits = SMALL
    fake_runner.other_exec = pod_sending(archive(outside))
    with pytest.raises((error, TransferError)) as info:
        ex.download_dir("out", box / "dest")
    assert isinstance(info.value, error)
    assert not (box / "dest").exists()
    assert list(box.iterdir()) == []  # no staging directory either
    assert untouched(tmp_path)


def test_download_checksum_mismatch_leaves_nothing(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    ex = make_executor()
    fake_runner.other_exec = pod_sending(make_tar([Member("a.txt", b"x")]), digest="f" * 64)
    with pytest.raises(TransferError, match="checksum mismatch"):
        ex.download_dir("d", tmp_path / "dest")
    with pytest.raises(TransferError, match="checksum mismatch"):
        ex.download_file("d/a.txt", tmp_path / "a.txt")
    assert tree_listing(tmp_path) == ["fakebin", "fakebin/kubectl"]


def test_download_tar_failure_in_pod_is_an_error(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    ex = make_executor()
    fake_runner.other_exec = pod_sending(make_tar([Member("a.txt", b"x")]), rc=2)
    with pytest.raises(TransferError, match="exit code 2"):
        ex.download_dir("d", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_download_file_expects_exactly_that_file(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    ex = make_executor()
    fake_runner.other_exec = pod_sending(make_tar([Member("./a.txt", b"x"), Member("./b.txt", b"y")]))
    with pytest.raises(TransferError, match="single file"):
        ex.download_file("a.txt", tmp_path / "a.txt")
    assert not (tmp_path / "a.txt").exists()


def test_download_missing_remote_is_a_clear_error(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    ex = make_executor()
    fake_runner.other_exec = lambda proc: ExecReply(
        b"",
        stderr=b"kubectl-executor: nope.txt does not exist\ncommand terminated with exit code 3\n",
        returncode=3,
    )
    with pytest.raises(TransferError, match=r"nope\.txt does not exist"):
        ex.download_file("nope.txt", tmp_path / "x")


def test_download_round_trip_with_the_real_scripts(
    make_executor: Make, fake_runner: FakeRunner, src: Path, work: Path, tmp_path: Path
) -> None:
    ex = make_executor(work_dir=str(work))
    fake_runner.exec_locally = True
    ex.upload_from_disk(src, remote_prefix="p")
    files = ex.download_dir("p", tmp_path / "back")
    assert sorted(str(f.relative_to(tmp_path / "back")) for f in files) == [
        "pkg/__init__.py", "pkg/sub/data.bin", "pkg/sub/m.py", "run.sh",
    ]  # fmt: skip
    assert (tmp_path / "back/pkg/sub/data.bin").read_bytes() == ALL_BYTES
    target = tmp_path / "one.bin"
    target.write_bytes(b"old")
    assert ex.download_file(f"{work}/p/pkg/sub/data.bin", target) == target
    assert target.read_bytes() == ALL_BYTES
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_download_dir_refuses_to_clobber_unless_overwrite(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    ex = make_executor()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("mine")
    before = len(fake_runner.spawns)
    with pytest.raises(InvalidInputError, match="overwrite=True"):
        ex.download_dir("d", dest)
    assert len(fake_runner.spawns) == before
    fake_runner.other_exec = pod_sending(make_tar([Member("new.txt", b"n")]))
    ex.download_dir("d", dest, overwrite=True)
    assert tree_listing(dest) == ["new.txt"]


def test_download_paths_are_confined(make_executor: Make, fake_runner: FakeRunner, tmp_path: Path) -> None:
    ex = make_executor()
    before = len(fake_runner.spawns)
    for bad in ("../x", "/etc/passwd", "a\nb"):
        with pytest.raises(UnsafePathError):
            ex.download_file(bad, tmp_path / "x")
    assert len(fake_runner.spawns) == before


def test_download_kubectl_failure_is_typed_not_a_tar_error(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path
) -> None:
    ex = make_executor()
    fake_runner.other_exec = lambda proc: ExecReply(
        b"", stderr=b'Error from server (NotFound): pods "kx-x" not found\n', returncode=1
    )
    with pytest.raises(NotFoundError):
        ex.download_file("a.txt", tmp_path / "a.txt")
    assert not (tmp_path / "a.txt").exists()


def test_download_dropped_stream_is_retried_from_scratch(
    make_executor: Make, fake_runner: FakeRunner, tmp_path: Path, sleeps: list[float]
) -> None:
    ex = make_executor()
    archive = make_tar([Member("a.txt", b"x" * 10_000)])
    good = pod_sending(archive)
    answers = [
        lambda proc: ExecReply(archive[:3000], stderr=b"error: connection reset by peer\n", returncode=1),
        good,
    ]
    fake_runner.other_exec = lambda proc: answers.pop(0)(proc)
    assert ex.download_dir("d", tmp_path / "dest") == [tmp_path / "dest" / "a.txt"]
    assert (tmp_path / "dest/a.txt").read_bytes() == b"x" * 10_000
    assert len(sleeps) == 1 and answers == []
