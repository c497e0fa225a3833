"""Rich results through the command line as users run it (a process, the real kubectl, the
emulator or a cluster): ``-o json`` carries the chart as base64, ``--save-outputs DIR`` writes it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from kx_cluster import Cluster
from test_cli import kx

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nopen('chart.csv', 'w').write('1,3,2\\n')\n"


def plot_image(cluster: Cluster) -> str:
    return os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image


def test_json_output_carries_the_chart_and_save_outputs_writes_it(cluster: Cluster, tmp_path: Path) -> None:
    out_dir = tmp_path / "charts"
    done = kx(
        cluster,
        "exec",
        "-c",
        CHART,
        "--image",
        plot_image(cluster),
        "-o",
        "json",
        "--save-outputs",
        str(out_dir),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    (png,) = result["outputs"]
    assert (png["mime_type"], png["encoding"]) == ("image/png", "base64")
    data = base64.b64decode(png["data"], validate=True)
    assert data.startswith(PNG_SIGNATURE) and png["metadata"]["width"] == int.from_bytes(data[16:20], "big")
    assert [f["path"] for f in result["files"]] == ["chart.csv"]
    assert result["saved_outputs"] == [str(out_dir / "output-0.png")]
    assert (out_dir / "output-0.png").read_bytes() == data
    assert [p.name for p in out_dir.iterdir()] == ["output-0.png"]


def test_text_mode_says_where_the_outputs_went(cluster: Cluster, tmp_path: Path) -> None:
    done = kx(cluster, "exec", "-c", CHART, "--image", plot_image(cluster), "--save-outputs", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # the chart never goes to stdout
    assert f"rich outputs (image/png): saved to {tmp_path}" in done.stderr
    assert (tmp_path / "output-0.png").read_bytes().startswith(PNG_SIGNATURE)
