"""pytest plugin loaded by tests/external/run.py (``-p kx_external_plugin``) in a suite's run dir.

It registers the suite's own markers and marks every test listed as not applicable in
rules.toml as skipped with its reason, and those listed under needs_egress too when the cluster's
pods have no route out (``KX_TEST_NO_EGRESS=1``, as on the real-cluster fixture). A listed test id that the suite does not have is a usage
error: the list must name real tests, or a renamed test would silently start to "pass".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest


def _config() -> dict[str, Any]:
    directory = Path(os.environ.get("KX_EXTERNAL_SUITE_DIR", "."))
    loaded: dict[str, Any] = json.loads((directory / "kx_external_suite.json").read_text())
    return loaded


def pytest_configure(config: pytest.Config) -> None:
    for line in _config()["markers"]:
        config.addinivalue_line("markers", line)


def _matches(item: pytest.Item, test_id: str) -> bool:
    """A rule names a test by node id, by node id without parameters, or by its bare name."""
    return test_id in (item.nodeid, item.nodeid.split("[", 1)[0], item.name, item.name.split("[", 1)[0])


def listed_skips() -> dict[str, str]:
    """The tests rules.toml has skipped here, with the reason shown: the not applicable ones, and
    those that need egress where the pods have none."""
    suite = _config()
    skips: dict[str, str] = {k: f"not applicable: {v}" for k, v in suite["not_applicable"].items()}
    if os.environ.get("KX_TEST_NO_EGRESS") == "1":
        needs_egress: dict[str, str] = suite.get("needs_egress", {})
        skips.update({k: f"no egress here (KX_TEST_NO_EGRESS=1): {v}" for k, v in needs_egress.items()})
    return skips


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    suite = _config()
    skips = listed_skips()
    unused = {**suite["not_applicable"], **suite.get("needs_egress", {})}
    for item in items:
        for test_id in list(unused):
            if _matches(item, test_id):
                unused.pop(test_id)
        for test_id, reason in skips.items():
            if _matches(item, test_id):
                item.add_marker(pytest.mark.skip(reason=reason))
    selected = (
        any("::" in arg for arg in config.args) or config.getoption("keyword") or config.getoption("markexpr")
    )
    if unused and not selected:
        raise pytest.UsageError(f"rules.toml lists tests this suite does not have: {sorted(unused)}")
