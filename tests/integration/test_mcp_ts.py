"""The MCP server through the official TypeScript SDK client (``@modelcontextprotocol/sdk``, pinned
in tests/mcp_clients/ts, installed from npm by .ci/setup), over stdio and streamable HTTP: big
downloads within its 10 MiB stdio buffer, a run longer than its request timeout kept alive by
progress, and one-shot clients whose close() sends no DELETE at --max-sessions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from kx_cluster import Cluster
from kx_mcp import (
    BINARY_9MIB,
    TEXT_4MIB,
    binary_9mib,
    http_server,
    pod_names,
    server_command,
    server_env,
    text_4mib,
)

pytestmark = pytest.mark.integration

CLIENT_DIR = Path(__file__).resolve().parents[1] / "mcp_clients" / "ts"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None or not (CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        pytest.fail("the TypeScript SDK client is not installed: run .ci/setup (needs node and npm)")
    return found


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[IO[str]]:
    path = tmp_path / "server.err"
    with path.open("w+") as fh:
        yield fh
        fh.seek(0)
        sys.stderr.write(f"--- server stderr ---\n{fh.read()}")


def drive(node: str, scenario: dict[str, Any], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the TypeScript client with ``steps``; one result per step."""
    done = subprocess.run(
        [node, str(CLIENT_DIR / "client.mjs"), json.dumps({**scenario, "steps": steps})],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=CLIENT_DIR,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(steps), done.stdout + done.stderr
    return results


def stdio(cluster: Cluster, *flags: str) -> dict[str, Any]:
    command = server_command()
    return {
        "transport": "stdio",
        "command": command[0],
        "args": [*command[1:], "mcp", *flags],
        "env": server_env(cluster),
    }


def run(code: str, language: str = "python", **options: Any) -> dict[str, Any]:
    return {"call": "run_code", "arguments": {"language": language, "code": code}, **options}


def check_downloads(results: list[dict[str, Any]]) -> None:
    made, binary, text, alive = results
    assert not made["isError"] and made["structured"]["exit_code"] == 0, made
    for got, want, encoding in ((binary, binary_9mib(), "base64"), (text, text_4mib(), "text")):
        assert got["size"] == len(want) and got["encoding"] == encoding, got
        assert got["assembledSha256"] == got["sha256"] == hashlib.sha256(want).hexdigest()
    assert alive["structured"]["stdout"] == "alive\n"  # the session and its pod survived
    assert binary["ranges"] >= 2  # 12 MiB of base64 cannot be one message


DOWNLOADS = [
    run(BINARY_9MIB + TEXT_4MIB),
    {"download": "big.bin"},
    {"download": "big.txt"},
    run("echo alive", "sh"),
]


def test_big_downloads_over_stdio_fit_the_10mib_buffer(node: str, cluster: Cluster) -> None:
    results = drive(node, stdio(cluster), DOWNLOADS)

    check_downloads(results)
    assert pod_names(cluster) == set()


def test_big_downloads_over_http(node: str, cluster: Cluster, errlog: IO[str]) -> None:
    with http_server(cluster, errlog) as (url, _):
        results = drive(node, {"transport": "http", "url": url}, DOWNLOADS)

    check_downloads(results)
    assert results[1]["ranges"] >= 12  # 1 MiB events: about 750 KiB of bytes each


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_run_longer_than_the_request_timeout_is_kept_alive_by_progress(
    node: str, cluster: Cluster, errlog: IO[str], transport: str
) -> None:
    slow_code = "import time\ntime.sleep(4)\nprint('slow done')"
    steps = [
        run("print('pod up')"),
        run(slow_code, timeoutMs=1500),  # the same client without resetting on progress gives up
        run(slow_code, timeoutMs=1500, resetTimeoutOnProgress=True),
    ]
    flags = ("--progress-interval", "0.5")
    if transport == "stdio":
        up, gave_up, slow = drive(node, stdio(cluster, *flags), steps)
    else:
        with http_server(cluster, errlog, *flags) as (url, _):
            up, gave_up, slow = drive(node, {"transport": "http", "url": url}, steps)

    assert up["structured"]["stdout"] == "pod up\n"
    assert gave_up.get("code") == -32001, gave_up  # the SDK's request timeout
    assert "clientError" not in slow, slow  # without progress the client would give up after 1.5 s
    assert slow["structured"]["stdout"] == "slow done\n"
    assert slow["progress"] >= 2


def test_the_default_run_timeout_answers_before_the_clients_default_request_timeout(
    node: str, cluster: Cluster
) -> None:
    """A run that never ends gets exit code 124 from the server's default timeout, not -32001 from the
    client's 60 s request timeout (the client waits with its default options)."""
    up, forever = drive(node, stdio(cluster, "--timeout", "3"), [run("print(1)"), run("sleep 3600", "sh")])

    assert up["structured"]["exit_code"] == 0
    assert forever["structured"]["exit_code"] == 124 and forever["structured"]["timed_out"], forever


def test_one_shot_http_clients_do_not_use_up_max_sessions(
    node: str, cluster: Cluster, errlog: IO[str]
) -> None:
    """The SDK's close() sends no DELETE: at --max-sessions the idle MCP session's pod is reclaimed."""
    with http_server(cluster, errlog, "--max-sessions", "2") as (url, _):
        steps: list[dict[str, Any]] = []
        for i in range(4):
            steps += [run(f"print({i})"), {"reconnect": True}]
        results = drive(node, {"transport": "http", "url": url}, steps)
        assert len(pod_names(cluster)) <= 2  # at most max-sessions pods at any time

    outputs = [r["structured"]["stdout"] for r in results if "structured" in r]
    assert outputs == ["0\n", "1\n", "2\n", "3\n"], results


def test_a_chart_reaches_the_typescript_client_as_image_content(node: str, cluster: Cluster) -> None:
    """Rich results: the official TypeScript SDK decodes the chart as an image block (PNG) and the
    HTML as an embedded text resource."""
    scenario = stdio(cluster)
    scenario["env"] = {
        **scenario["env"],
        "KUBECTL_EXECUTOR_IMAGE": os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image,
    }
    chart = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 2])\n"
    page = "class P:\n    def _repr_html_(self):\n        return '<p>ts</p>'\ndisplay(P())\n"
    drawn, shown = drive(node, scenario, [run(chart), run(page)])
    images = [c for c in drawn["content"] if c["type"] == "image"]
    assert len(images) == 1 and images[0]["mimeType"] == "image/png", drawn
    assert (
        images[0]["head"] == "89504e470d0a1a0a"
        and images[0]["bytes"] == drawn["structured"]["outputs"][0]["size"]
    )
    (html,) = [c for c in shown["content"] if c["type"] == "resource"]
    assert (html["mimeType"], html["text"]) == ("text/html", "<p>ts</p>")
