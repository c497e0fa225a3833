"""Shim for AutoGen's own executor tests (autogen-ext, autogen-agentchat) run on our adapter:
the cluster comes from the environment and what a test leaves running is stopped
(see tests/external/kx_autogen_shim.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kx_autogen_shim
import pytest


def pytest_configure(config: pytest.Config) -> None:
    kx_autogen_shim.configure()


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    yield from kx_autogen_shim.stop_after_test()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kx_autogen_shim.note_skip(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    kx_autogen_shim.finish(session)
