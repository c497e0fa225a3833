"""Rich results through the MCP server, seen by the Python SDK's own client (the real
``kubectl-executor mcp`` process over stdio, the real kubectl, the emulator or a cluster): a chart
as image content, HTML and Markdown as embedded text resources, changed files in the result."""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the mcp extra: pip install 'kubectl-executor[mcp]'")

from kx_cluster import Cluster
from kx_mcp import server_command, server_env
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(4, 3), dpi=50)\n"
    "ax.bar(['a', 'b'], [3, 5])\n"
)
PAGE = (
    "class Page:\n"
    "    def _repr_html_(self):\n"
    "        return '<h1>report</h1>'\n"
    "    def _repr_markdown_(self):\n"
    "        return '# report'\n"
    "display(Page())\n"
    "open('made.txt', 'w').write('made')\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[IO[str]]:
    path = tmp_path / "server.err"
    with path.open("w+") as fh:
        yield fh
        fh.seek(0)
        sys.stderr.write(f"--- server stderr ---\n{fh.read()}")


@contextlib.asynccontextmanager
async def session_for(cluster: Cluster, errlog: IO[str], image: str) -> AsyncIterator[ClientSession]:
    command = server_command()
    env = {**server_env(cluster), "KUBECTL_EXECUTOR_IMAGE": image}
    params = StdioServerParameters(command=command[0], args=[*command[1:], "mcp", "-v"], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data: dict[str, Any] = result.structured_content
    return data


async def test_a_chart_is_image_content_and_html_markdown_are_text_resources(
    cluster: Cluster, errlog: IO[str]
) -> None:
    image = os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image
    async with session_for(cluster, errlog, image) as session:
        chart = await session.call_tool("run_code", {"language": "python", "code": CHART})
        data = structured(chart)
        images = [c for c in chart.content if c.type == "image"]
        assert len(images) == 1 and images[0].mime_type == "image/png"
        png = base64.b64decode(images[0].data)
        assert png.startswith(PNG_SIGNATURE)
        (entry,) = data["outputs"]
        assert entry["mime_type"] == "image/png" and entry["size"] == len(png)
        assert entry["metadata"]["width"] == int.from_bytes(png[16:20], "big") > 50
        assert "image/png" in chart.content[0].text  # the text names the image too

        page = await session.call_tool("run_code", {"language": "python", "code": PAGE})
        data = structured(page)
        resources = {c.resource.mime_type: c.resource for c in page.content if c.type == "resource"}
        assert resources["text/html"].text == "<h1>report</h1>"
        assert resources["text/markdown"].text == "# report"
        assert [o["mime_type"] for o in data["outputs"]] == ["text/html", "text/markdown", "text/plain"]
        # text/plain of an object shown richly stays in the structured result, not in the content
        assert not [c for c in page.content[1:] if c.type == "text"]
        assert [(f["path"], f["size"]) for f in data["files"]] == [("made.txt", 4)]
        assert "made.txt" in page.content[0].text
