"""Run another project's own test suite against kubectl-executor.

    python tests/external/run.py SUITE [pytest args ...]
    python tests/external/run.py --list

The suite is described in tests/external/rules.toml: the PyPI sdist it comes from (downloaded at
test time with ``pip download --no-binary :all:``, cached under ~/.cache/kx-external, never
vendored), the files taken from it, and the only textual rewrites applied to them (imports and
executor construction, each with its reason). The files are extracted into a fresh temporary
directory with our shim conftest.py and a small plugin, and pytest runs there: tests listed as not
applicable are skipped with their reason (``-rs`` shows it), a listed test that does not exist is
an error (so the list cannot rot), and the last line printed is pytest's own.

Where it runs: the local emulator by default (the shims start it, with the real kubectl), a real
cluster with ``KX_TEST_CONTEXT`` (and ``KX_TEST_KUBECONFIG``), as the integration suite does.
``KX_TEST_KUBECTL`` picks kubectl. Shims and the plugin import ``kx_external`` from this directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the CI runs 3.11
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULES = HERE / "rules.toml"
CACHE = Path(os.environ.get("KX_EXTERNAL_CACHE", Path.home() / ".cache" / "kx-external"))
PLUGIN = "kx_external_plugin"


class SuiteError(Exception):
    """The rules do not fit the sdist (a rewrite that no longer applies, a missing file)."""


def load_rules(path: Path = RULES) -> dict[str, dict[str, Any]]:
    with path.open("rb") as fh:
        suites: dict[str, dict[str, Any]] = tomllib.load(fh)["suites"]
    return suites


def cached_sdist(package: str, version: str, cache: Path) -> Path | None:
    names = {f"{package.replace('-', '_').lower()}-{version}.tar.gz", f"{package.lower()}-{version}.tar.gz"}
    return next((p for p in sorted(cache.glob("*.tar.gz")) if p.name.lower() in names), None)


def fetch_sdist(package: str, version: str, cache: Path = CACHE) -> Path:
    """The sdist of package==version, downloaded once into the cache (pip's own client)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = cached_sdist(package, version, cache)
    if found is None:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"{package}=={version}", "-d", str(cache)],
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SuiteError(f"pip download {package}=={version} failed (exit {done.returncode}; see above)")
        found = cached_sdist(package, version, cache)
    if found is None:
        raise SuiteError(f"pip download left no sdist of {package}=={version} in {cache}")
    return found


def extract(sdist: Path, files: list[str], dest: Path) -> None:
    """Copy the listed files (paths under the sdist's top directory) into dest, same layout."""
    with tarfile.open(sdist) as tar:
        members = {}
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) > 1 and member.isfile():
                members[str(PurePosixPath(*parts[1:]))] = member
        for name in files:
            member = members.get(name)
            if member is None:
                raise SuiteError(f"{sdist.name} has no file {name}")
            source = tar.extractfile(member)
            assert source is not None
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())


def apply_rewrites(dest: Path, rewrites: list[dict[str, Any]]) -> None:
    """Each rewrite must match exactly ``count`` times: a stale rule fails loudly, never silently."""
    for rule in rewrites:
        for key in ("file", "old", "new", "why"):
            if key not in rule:
                raise SuiteError(f"rewrite {rule!r} lacks {key!r}")
        path = dest / rule["file"]
        text = path.read_text(encoding="utf-8")
        expected = int(rule.get("count", 1))
        found = text.count(rule["old"])
        if found != expected:
            raise SuiteError(
                f"rewrite for {rule['file']} expected {expected} occurrence(s) of {rule['old']!r}, "
                f"found {found}: the sdist changed or the rule is wrong"
            )
        path.write_text(text.replace(rule["old"], rule["new"]), encoding="utf-8")


def prepare(name: str, suite: dict[str, Any], dest: Path) -> list[str]:
    """Build the run directory; returns what pytest should run (paths relative to dest)."""
    sdist = fetch_sdist(suite["package"], suite["version"], CACHE)
    extract(sdist, list(suite["files"]), dest)
    apply_rewrites(dest, list(suite.get("rewrites", [])))
    shims = HERE / "shims"
    if "shim" in suite:
        shutil.copyfile(shims / suite["shim"], dest / "conftest.py")
    for target, ours in dict(suite.get("extra", {})).items():
        (dest / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shims / ours, dest / target)
    config = {
        "suite": name,
        "not_applicable": dict(suite.get("not_applicable", {})),
        "needs_egress": dict(suite.get("needs_egress", {})),
        "markers": list(suite.get("markers", [])),
    }
    (dest / "kx_external_suite.json").write_text(json.dumps(config, indent=2))
    # Our own ini, so the run neither picks up this repository's pytest settings nor the sdist's;
    # a suite's `ini` lines are the settings its project's own configuration gives it.
    ini = ["addopts = -p no:cacheprovider", *[str(line) for line in suite.get("ini", [])]]
    (dest / "pytest.ini").write_text("[pytest]\n" + "\n".join(ini) + "\n")
    run = suite.get("run") or [f for f in suite["files"] if PurePosixPath(f).name.startswith("test_")]
    return [str(r) for r in run]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", nargs="?")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument("--names", action="store_true", help="print only the suite names (for CI)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (printed)")
    args, pytest_args = parser.parse_known_args(argv)
    suites = load_rules()
    if args.names:
        print("\n".join(suites))
        return 0
    if args.list or not args.suite:
        for name, suite in suites.items():
            print(f"{name}: {suite['package']}=={suite['version']} ({len(suite['files'])} files)")
        return 0 if args.list else 2
    if args.suite not in suites:
        parser.error(f"unknown suite {args.suite!r}; known: {', '.join(suites)}")
    dest = Path(tempfile.mkdtemp(prefix=f"kx-external-{args.suite}-"))
    try:
        try:
            run = prepare(args.suite, suites[args.suite], dest)
        except SuiteError as exc:
            print(f"error: suite {args.suite}: {exc}", file=sys.stderr)
            return 3
        path = [str(HERE), str(ROOT / "tests" / "integration"), str(ROOT / "fixtures")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])}
        env["KX_EXTERNAL_SUITE_DIR"] = str(dest)
        command = [sys.executable, "-m", "pytest", "-p", PLUGIN, "-rs", *run, *pytest_args]
        print(f"+ cd {dest} && {' '.join(command[1:])}", flush=True)
        return subprocess.run(command, cwd=dest, env=env).returncode
    finally:
        if args.keep:
            print(f"kept {dest}", file=sys.stderr)
        else:
            shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
