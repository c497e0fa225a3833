"""tests/external/run.py without network or cluster: extraction, rewrites, the not-applicable plugin."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

EXTERNAL = Path(__file__).resolve().parents[1] / "external"


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kx_external_run", EXTERNAL / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load_runner()


def make_sdist(cache: Path, files: dict[str, str]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "some_pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"some_pkg-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


SUITE = {
    "package": "some-pkg",
    "version": "1.0",
    "files": ["tests/test_a.py"],
    "rewrites": [
        {"file": "tests/test_a.py", "old": "import theirs", "new": "import os as theirs", "why": "x"}
    ],
    "not_applicable": {"test_two": "needs their cloud"},
}
TEST_A = (
    "import theirs\n\ndef test_one():\n    assert theirs.sep == '/'\n\ndef test_two():\n    assert False\n"
)


def test_the_rules_file_parses_and_names_real_shims() -> None:
    for name, suite in run.load_rules().items():
        assert {"package", "version", "files"} <= set(suite), name
        for rule in suite.get("rewrites", []):
            assert rule["why"].strip(), (name, rule)
        if "shim" in suite:
            assert (EXTERNAL / "shims" / suite["shim"]).is_file(), name
        for ours in suite.get("extra", {}).values():
            assert (EXTERNAL / "shims" / ours).is_file(), name


def test_prepare_uses_the_cache_extracts_and_rewrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_sdist(tmp_path / "cache", {"tests/test_a.py": TEST_A, "setup.py": ""})
    monkeypatch.setattr(run, "CACHE", tmp_path / "cache")
    dest = tmp_path / "run"
    dest.mkdir()
    assert run.prepare("demo", SUITE, dest) == ["tests/test_a.py"]
    assert (dest / "tests/test_a.py").read_text().startswith("import os as theirs\n")
    assert not (dest / "setup.py").exists()  # only the listed files
    assert json.loads((dest / "kx_external_suite.json").read_text())["not_applicable"] == {
        "test_two": "needs their cloud"
    }


def test_a_rewrite_that_no_longer_matches_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("import a\nimport a\n")
    with pytest.raises(run.SuiteError, match="expected 1 occurrence"):
        run.apply_rewrites(tmp_path, [{"file": "f.py", "old": "import a", "new": "import b", "why": "x"}])
    with pytest.raises(run.SuiteError, match="found 0"):
        run.apply_rewrites(tmp_path, [{"file": "f.py", "old": "import c", "new": "import b", "why": "x"}])


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, {"a.py": ""})
    with pytest.raises(run.SuiteError, match=r"has no file b\.py"):
        run.extract(sdist, ["b.py"], tmp_path / "out")


def pytest_in(dest: Path, not_applicable: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (dest / "kx_external_suite.json").write_text(
        json.dumps({"not_applicable": not_applicable, "markers": []})
    )
    env = {**os.environ, "PYTHONPATH": str(EXTERNAL), "KX_EXTERNAL_SUITE_DIR": str(dest)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "kx_external_plugin", "-rs", "-p", "no:cacheprovider", "test_a.py"],
        cwd=dest, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_not_applicable_tests_are_skipped_visibly_with_their_reason(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(TEST_A.replace("import theirs", "import os as theirs"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = pytest_in(tmp_path, {"test_two": "needs their cloud"})
    assert done.returncode == 0, done.stdout
    assert "SKIPPED [1] test_a.py" in done.stdout and "not applicable: needs their cloud" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("=") and "1 passed, 1 skipped" in done.stdout


def test_a_listed_test_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(TEST_A.replace("import theirs", "import os as theirs"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = pytest_in(tmp_path, {"test_renamed": "gone"})
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage-error exit code
    assert "test_renamed" in done.stderr
