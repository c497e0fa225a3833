"""Rich results through the AutoGen adapter (the real kubectl, the emulator or a cluster): a chart
comes back as a PNG file in work_dir, named in the output and in output_files, as autogen-ext's
DockerJupyterCodeExecutor returns it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from kx_cluster import Cluster

from kubectl_executor.autogen import KubectlCodeExecutor

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART = "import matplotlib.pyplot as plt\nplt.plot([2, 1, 3])\nprint('drawn')\n"
PAGE = "class P:\n    def _repr_html_(self):\n        return '<i>page</i>'\ndisplay(P())\n"


def test_a_chart_and_html_become_files_in_work_dir(cluster: Cluster, tmp_path: Path) -> None:
    options = {**cluster.executor_kwargs(), "image": os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image}

    async def go() -> tuple[object, list[Path]]:
        async with KubectlCodeExecutor(work_dir=tmp_path, **options) as executor:
            result = await executor.execute_code_blocks(
                [CodeBlock(code=CHART, language="python"), CodeBlock(code=PAGE, language="python")],
                CancellationToken(),
            )
            return result, list(tmp_path.iterdir())

    result, listed = asyncio.run(go())
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    png, html = result.output_files  # type: ignore[attr-defined]
    assert (
        png.suffix == ".png"
        and png.parent == tmp_path.absolute()
        and png.read_bytes().startswith(PNG_SIGNATURE)
    )
    assert html.suffix == ".html" and html.read_text() == "<i>page</i>"
    assert result.output == f"drawn\n{png}\n{html}\n"  # type: ignore[attr-defined]
    assert {png, html} <= {p.absolute() for p in listed}
