"""The AutoGen suites' parts of tests/external (no network, no cluster): a suite's ini lines,
and the shim's rule that a skip rules.toml does not list fails the run."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

EXTERNAL = Path(__file__).resolve().parents[1] / "external"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_suites_ini_lines_are_its_pytest_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = load("kx_external_run_ini", EXTERNAL / "run.py")
    cache = tmp_path / "cache"
    cache.mkdir()
    with tarfile.open(cache / "pkg-1.0.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("pkg-1.0/tests/test_a.py")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    monkeypatch.setattr(run, "CACHE", cache)
    dest = tmp_path / "run"
    dest.mkdir()
    suite = {"package": "pkg", "version": "1.0", "files": ["tests/test_a.py"], "ini": ["asyncio_mode = auto"]}
    run.prepare("demo", suite, dest)
    assert (
        dest / "pytest.ini"
    ).read_text() == "[pytest]\naddopts = -p no:cacheprovider\nasyncio_mode = auto\n"


def test_only_listed_tests_may_be_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXTERNAL))
    monkeypatch.syspath_prepend(str(EXTERNAL.parent / "integration"))
    monkeypatch.delitem(sys.modules, "kx_autogen_shim", raising=False)
    shim = load("kx_autogen_shim", EXTERNAL / "kx_autogen_shim.py")
    (tmp_path / "kx_external_suite.json").write_text(
        json.dumps({"not_applicable": {"test_a": "x", "tests/t.py::test_b": "y"}, "markers": []})
    )
    monkeypatch.setenv("KX_EXTERNAL_SUITE_DIR", str(tmp_path))
    for nodeid, skipped in [
        ("tests/t.py::test_a[docker]", True),  # by bare name, any parameter
        ("tests/t.py::test_b", True),  # by node id
        ("tests/t.py::test_c", True),  # not listed: its own skipif fired
        ("tests/t.py::test_d", False),
    ]:
        shim.note_skip(SimpleNamespace(nodeid=nodeid, skipped=skipped))  # type: ignore[arg-type]
    assert shim._unexpected_skips == ["tests/t.py::test_c"]
