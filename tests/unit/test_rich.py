"""Rich results: the in-pod code (_pod/rich.py, run on this machine's Python), the frame, the
report's parsing and budgets, and the executor's results (the real runners, run locally)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kx_fakes import FakeRunner
from test_session import LocalAgentRunner

import kubectl_executor
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._exec.outputs import output_filename, output_json, parse_report
from kubectl_executor._exec.protocol import RICH_ENV, FrameSplitter, RichLimits, RunRequest
from kubectl_executor._exec.session import Session
from kubectl_executor.boundary import ClusterAccess, RichOutput

POD = Path(kubectl_executor.__file__).parent / "_exec" / "_pod"


def tiny_png(width: int, height: int) -> bytes:
    """A valid PNG of width x height grey pixels (stdlib only)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def rich() -> Any:
    spec = importlib.util.spec_from_file_location("kx_rich_under_test", POD / "rich.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Chart:
    def _repr_png_(self) -> bytes:
        return tiny_png(7, 3)

    def _repr_html_(self) -> str:
        return "<b>chart</b>"

    def __repr__(self) -> str:
        return "Chart()"


class Bundle:
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return {"text/markdown": "# hi", "application/json": {"a": 1}}, {"text/markdown": {"x": 1}}


# -- in the pod: representations ---------------------------------------------------------------


def test_bundle_has_each_representation_richest_first(rich: Any) -> None:
    items = rich.rich_bundle(Chart())
    assert [i["mime_type"] for i in items] == ["image/png", "text/html", "text/plain"]
    png = items[0]
    assert png["b64"] and base64.b64decode(png["data"]) == tiny_png(7, 3)
    assert (png["metadata"]["width"], png["metadata"]["height"]) == (7, 3)
    assert items[2]["data"] == "Chart()"


def test_mimebundle_and_its_metadata_and_json_as_text(rich: Any) -> None:
    items = {i["mime_type"]: i for i in rich.rich_bundle(Bundle())}
    assert items["text/markdown"]["data"] == "# hi" and items["text/markdown"]["metadata"] == {"x": 1}
    assert json.loads(items["application/json"]["data"]) == {"a": 1}
    assert "text/plain" in items


def test_a_failing_repr_method_is_skipped(rich: Any) -> None:
    class Broken:
        def _repr_html_(self) -> str:
            raise RuntimeError("no")

        def _repr_svg_(self) -> None:
            return None

    assert [i["mime_type"] for i in rich.rich_bundle(Broken())] == ["text/plain"]


def test_png_size_reads_the_header_only_of_a_png(rich: Any) -> None:
    assert rich.png_size(tiny_png(640, 1)) == (640, 1)
    assert rich.png_size(b"GIF89a" + b"\0" * 30) is None


# -- in the pod: changed files ------------------------------------------------------------------


def test_scan_lists_new_and_changed_files_not_ours(rich: Any, tmp_path: Path) -> None:
    (tmp_path / "same.txt").write_text("same")
    (tmp_path / "edit.txt").write_text("old")
    scan = rich.FileScan(str(tmp_path), ["block.py"])
    (tmp_path / "edit.txt").write_text("newer")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.bin").write_bytes(b"\0" * 10)
    (tmp_path / "block.py").write_text("code")  # the block's own file
    (tmp_path / ".kx-logs").mkdir()
    (tmp_path / ".kx-logs" / "x.out").write_text("log")
    (tmp_path / ".kx-run.py").write_text("scratch")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_text("cache")
    files, cut = scan.changes(100, 1 << 20)
    assert not cut
    assert files == [
        {"path": "edit.txt", "size": 5, "sha256": hashlib.sha256(b"newer").hexdigest()},
        {"path": "sub/new.bin", "size": 10, "sha256": hashlib.sha256(b"\0" * 10).hexdigest()},
    ]


def test_scan_bounds_cut_and_say_so(rich: Any, tmp_path: Path) -> None:
    scan = rich.FileScan(str(tmp_path))
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x" * 100)
    files, cut = scan.changes(3, 1 << 20)
    assert cut and [f["path"] for f in files] == ["f0", "f1", "f2"]
    files, cut = rich.FileScan(str(tmp_path)).changes(100, 1 << 20)
    assert (files, cut) == ([], False)  # nothing changed since that scan
    scan = rich.FileScan(str(tmp_path))
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"y" * 100)
    files, cut = scan.changes(100, 250)  # two files fit the hash budget
    assert cut and len(files) == 2


def test_walk_bound_cuts_the_scan(rich: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rich, "RICH_SCAN_FILES", 3)
    for i in range(5):
        (tmp_path / f"f{i}").write_text("x")
    assert rich.FileScan(str(tmp_path)).changes(100, 1 << 20)[1] is True


# -- in the pod: the report and its budgets -----------------------------------------------------


def write_items(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return str(path)


def test_report_keeps_what_is_over_budget_in_the_pod(rich: Any, tmp_path: Path) -> None:
    big = rich.rich_item("image/png", tiny_png(50, 50))
    small = rich.rich_item("text/html", "<i>x</i>")
    items = write_items(tmp_path / "n.rich", [big, small, dict(small)])
    limits = {"output": len(big["data"]) - 1, "result": 2 * len(small["data"]) - 1, "files": -1, "hash": 0}
    report = json.loads(rich.rich_report(limits, "n", str(tmp_path), items, None))
    first, second, third = report["outputs"]
    assert first["data"] == "" and first["kept_path"] == str(tmp_path / "n.output-0.png")
    assert Path(first["kept_path"]).read_bytes() == tiny_png(50, 50)
    assert second["data"] == "<i>x</i>" and second.get("kept_path") is None
    assert third["data"] == "" and Path(third["kept_path"]).read_text() == "<i>x</i>"  # the result cap
    assert not (tmp_path / "n.rich").exists()


def test_no_outputs_and_no_files_is_no_report(rich: Any, tmp_path: Path) -> None:
    limits = {"output": 10, "result": 10, "files": 10, "hash": 10}
    assert (
        rich.rich_report(limits, "n", str(tmp_path), str(tmp_path / "absent"), rich.FileScan(str(tmp_path)))
        is None
    )


def test_limits_travel_in_the_request_env(rich: Any) -> None:
    limits = RichLimits(per_output=5, per_result=6, list_files=False)
    assert rich.rich_limits({RICH_ENV: limits.env_value()}) == {
        "output": 5,
        "result": 6,
        "files": -1,
        "hash": limits.max_hash_bytes,
    }
    assert rich.rich_limits({}) is None
    assert rich.rich_limits({RICH_ENV: "1 2 x 4"}) is None


# -- the client: frames and parsing -------------------------------------------------------------


NONCE = "ab12" * 6


def test_rich_and_tool_frames_are_cut_out_and_output_is_not_held(rich: Any) -> None:
    out: list[bytes] = []
    plain = FrameSplitter(NONCE, out.append, limit=1 << 20, kinds=("RICH",))
    plain.feed(b"line one\n")
    assert b"".join(out) == b"line one\n"  # a line's end is not held back for the RICH tag's sake
    out.clear()
    splitter = FrameSplitter(NONCE, out.append, limit=1 << 20, kinds=("FRAME", "RICH"))
    splitter.feed(b"line one\n")
    report, tool = b'{"outputs":[]}', b'{"status":"returned"}'
    stream = f"__KX_RICH_{NONCE}__ {len(report)}\n".encode() + report
    stream += f"\n__KX_FRAME_{NONCE}__ {len(tool)}\n".encode() + tool
    for i in range(0, len(stream), 5):
        splitter.feed(stream[i : i + 5])
    assert splitter.close() == tool
    assert splitter.frames["RICH"] == report
    assert b"".join(out) == b"line one\n"


def test_parse_report_gives_bytes_for_binary_and_str_for_text() -> None:
    png = tiny_png(2, 2)
    report = {
        "outputs": [
            {
                "mime_type": "image/png",
                "data": base64.b64encode(png).decode(),
                "b64": True,
                "metadata": {"width": 2},
            },
            {
                "mime_type": "text/html",
                "data": "",
                "b64": False,
                "kept_path": "/tmp/kx-logs/n.output-1.html",
                "size": 9,
            },
        ],
        "files": [{"path": "a.txt", "size": 1, "sha256": "ab"}],
        "files_truncated": True,
    }
    got = parse_report(json.dumps(report).encode())
    assert got.outputs[0] == RichOutput(mime_type="image/png", data=png, metadata={"width": 2})
    assert got.outputs[1].kept_path == "/tmp/kx-logs/n.output-1.html" and got.outputs[1].data == ""
    assert got.outputs[1].metadata["size"] == 9
    assert [f.path for f in got.files] == ["a.txt"] and got.files_truncated


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"outputs": [{"data": "x"}]}',
        b'{"outputs": [{"mime_type": "image/png", "data": "!!", "b64": true}]}',
    ],
)
def test_a_malformed_report_is_no_results(data: bytes) -> None:
    got = parse_report(data)
    assert got.outputs == () and got.files == ()


def test_output_names_are_safe_and_json_is_base64_for_binary() -> None:
    weird = RichOutput(mime_type="application/../../x y", data="z")
    assert output_filename(3, weird) == "output-3.x-y"
    assert output_filename(0, RichOutput(mime_type="image/png", data=b"\x89")) == "output-0.png"
    encoded = output_json(RichOutput(mime_type="image/png", data=b"\x89P"))
    assert encoded["encoding"] == "base64" and base64.b64decode(encoded["data"]) == b"\x89P"


# -- the real runners, locally ----------------------------------------------------------------------


@pytest.fixture
def local(make_executor: Callable[..., Any], fake_runner: FakeRunner, tmp_path: Path) -> Any:
    work = tmp_path / "ws"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    fake_runner.exec_locally = True
    fake_runner.local_home = home
    return make_executor(work_dir=str(work))


CHART_CLASS = (
    "import base64\n"
    "class Chart:\n"
    "    def _repr_png_(self):\n"
    f"        return base64.b64decode({base64.b64encode(tiny_png(4, 5)).decode()!r})\n"
)


def test_stateless_python_block_lists_its_files_and_displays(local: Any) -> None:
    code = CHART_CLASS + "open('made.txt', 'w').write('abc')\nprint('ok')\ndisplay(Chart())\n"
    result = local.run(
        code.replace("open('made.txt'", f"open({str(local.work_dir)!r} + '/made.txt'"), "python"
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "ok\n", "")
    assert [(f.path, f.size, f.sha256) for f in result.files] == [
        ("made.txt", 3, hashlib.sha256(b"abc").hexdigest())
    ]
    png = [o for o in result.outputs if o.mime_type == "image/png"]
    assert png and png[0].data == tiny_png(4, 5) and png[0].metadata["width"] == 4


def test_shell_block_lists_files_and_list_files_false_does_not(
    make_executor: Callable[..., Any], local: Any
) -> None:
    result = local.run(f"cd {local.work_dir} && printf 12345 > out.dat", "sh")
    assert [(f.path, f.size) for f in result.files] == [("out.dat", 5)]
    assert result.outputs == ()
    quiet = make_executor(work_dir=str(local.work_dir), list_files=False)
    assert quiet.run(f"cd {local.work_dir} && printf 1 > other.dat", "sh").files == ()


def test_outputs_over_budget_are_kept_in_the_pod(make_executor: Callable[..., Any], local: Any) -> None:
    ex = make_executor(work_dir=str(local.work_dir), max_rich_output_bytes=10)
    result = ex.run(CHART_CLASS + "display(Chart())\n", "python")
    png = next(o for o in result.outputs if o.mime_type == "image/png")
    assert png.data == b"" and png.kept_path is not None
    assert Path(png.kept_path).read_bytes() == tiny_png(4, 5)


def test_execute_code_blocks_carries_outputs_and_files(local: Any) -> None:
    from kubectl_executor import CodeBlock

    result = local.execute_code_blocks(
        [
            CodeBlock(f"cd {local.work_dir} && echo 1 > a.txt", "sh"),
            CodeBlock(CHART_CLASS + "display(Chart())\nprint('seed output')", "python"),
        ]
    )
    assert result.output == "seed output\n"  # the seed's output is unchanged
    assert [f.path for f in result.files] == ["a.txt"]
    assert [o.mime_type for o in result.outputs] == ["image/png", "text/plain"]


# -- the session agent and its kernel, locally -------------------------------------------------------


@pytest.fixture
def open_session(fake_kubectl: str) -> Iterator[Callable[..., Session]]:
    made: list[Session] = []
    runner = LocalAgentRunner()
    kubectl = Kubectl(ClusterAccess(kubectl=fake_kubectl), runner=runner, retry=RetryPolicy(attempts=1))

    def make(**kwargs: Any) -> Session:
        session = Session(kubectl, "pod-a", **kwargs)
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


def block(work: Path, code: str, runner: str = "python") -> RunRequest:
    return RunRequest(
        code=code.encode(),
        work_dir=str(work),
        path="b.py" if runner == "python" else "b.sh",
        runner=runner,
        timeout=30,
        env={RICH_ENV: RichLimits().env_value()},
    )


def test_kernel_displays_last_expression_and_display_calls(
    open_session: Callable[..., Session], tmp_path: Path
) -> None:
    session = open_session(stateful=True)
    first = session.run(block(tmp_path, CHART_CLASS + "x = 41\n"))
    assert parse_report(first.rich).outputs == ()  # an assignment displays nothing
    second = parse_report(session.run(block(tmp_path, "display(Chart())\nx + 1\n")).rich)
    assert [(o.mime_type, o.metadata["bundle"]) for o in second.outputs] == [
        ("image/png", 0),
        ("text/plain", 0),
        ("text/plain", 2),
    ]
    assert second.outputs[0].data == tiny_png(4, 5) and second.outputs[2].data == "42"
    none = session.run(block(tmp_path, "print('p')\nNone\n"))
    assert none.stdout == b"p\n" and parse_report(none.rich).outputs == ()


def test_kernel_error_keeps_outputs_made_before_it(
    open_session: Callable[..., Session], tmp_path: Path
) -> None:
    session = open_session(stateful=True)
    done = session.run(block(tmp_path, "display('before')\n1 / 0\n"))
    assert done.exit_code == 1 and b"ZeroDivisionError" in done.stderr
    assert [o.data for o in parse_report(done.rich).outputs] == ["'before'"]


def test_session_shell_block_lists_files(open_session: Callable[..., Session], tmp_path: Path) -> None:
    session = open_session()
    done = session.run(block(tmp_path, f"echo hi > {tmp_path}/s.txt", "sh"))
    assert [(f.path, f.size) for f in parse_report(done.rich).files] == [("s.txt", 3)]
