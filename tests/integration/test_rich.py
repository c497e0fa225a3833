"""Rich results through the real kubectl (emulator or a real cluster): charts, HTML, changed files.

Tests that draw with matplotlib run in ``KX_TEST_PLOT_IMAGE`` (an image with matplotlib and
pandas; default: the suite's image, whose emulated pods run this machine's Python, which
.ci/setup gives both). The others need no library in the image.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import CodeBlock

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(4, 3), dpi=50)\n"
    "ax.plot([1, 2, 3], [2, 4, 1])\n"
    "ax.set_title('pod chart')\n"
)
OBJECTS = (
    "import base64, zlib, struct\n"
    "def chunk(k, d):\n"
    "    return struct.pack('>I', len(d)) + k + d + struct.pack('>I', zlib.crc32(k + d))\n"
    "class Dot:\n"
    "    def _repr_png_(self):\n"
    "        ihdr = struct.pack('>IIBBBBB', 3, 2, 8, 0, 0, 0, 0)\n"
    "        raw = zlib.compress(b'\\0\\x80\\x80\\x80' * 2)\n"
    "        return b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', raw) + chunk(b'IEND', b'')\n"
    "    def _repr_html_(self):\n"
    "        return '<b>dot</b>'\n"
)


def plot_image(cluster: Cluster) -> str:
    return os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image


def test_stateful_chart_comes_back_as_png(executor_factory: ExecutorFactory, cluster: Cluster) -> None:
    ex = executor_factory(image=plot_image(cluster), stateful=True)
    result = ex.run(CHART, "python")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # no "Agg cannot show" warning, nothing else
    (png,) = [o for o in result.outputs if o.mime_type == "image/png"]
    assert isinstance(png.data, bytes) and png.data.startswith(PNG_SIGNATURE)
    assert png.metadata["width"] > 50 and png.metadata["height"] > 50
    assert int.from_bytes(png.data[16:20], "big") == png.metadata["width"]
    # The figure was closed: the next block shows nothing again, and plt.show() hands a figure over.
    again = ex.run("x = 1", "python")
    assert again.outputs == ()
    shown = ex.run("plt.figure(); plt.plot([3, 1]); plt.show()\n", "python")
    assert [o.mime_type for o in shown.outputs] == ["image/png"] and shown.stderr == ""


def test_stateful_dataframe_gives_html(executor_factory: ExecutorFactory, cluster: Cluster) -> None:
    ex = executor_factory(image=plot_image(cluster), stateful=True)
    result = ex.run("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})\n", "python")
    assert result.exit_code == 0, result.stderr
    html = [o for o in result.outputs if o.mime_type == "text/html"]
    assert html and "<table" in str(html[0].data) and ">x<" in str(html[0].data)


def test_stateless_python_captures_open_figures(executor_factory: ExecutorFactory, cluster: Cluster) -> None:
    ex = executor_factory(image=plot_image(cluster))
    result = ex.run(CHART, "python")
    assert result.exit_code == 0, result.stderr
    (png,) = result.outputs
    assert png.mime_type == "image/png" and isinstance(png.data, bytes) and png.data.startswith(PNG_SIGNATURE)


def test_repr_objects_and_display_without_any_library(executor_factory: ExecutorFactory) -> None:
    ex = executor_factory(stateful=True)
    ex.run(OBJECTS, "python")
    result = ex.run("display(Dot())\n'last'\n", "python")
    assert [o.mime_type for o in result.outputs] == ["image/png", "text/html", "text/plain", "text/plain"]
    png = result.outputs[0]
    assert isinstance(png.data, bytes) and png.data.startswith(PNG_SIGNATURE)
    assert (png.metadata["width"], png.metadata["height"]) == (3, 2)
    assert result.outputs[1].data == "<b>dot</b>" and result.outputs[3].data == "'last'"
    assert result.stdout == ""  # outputs never mix into stdout


def test_over_budget_output_is_kept_in_the_pod(executor_factory: ExecutorFactory) -> None:
    ex = executor_factory(stateful=True, max_rich_output_bytes=16)
    result = ex.run(OBJECTS + "display(Dot())\n", "python")
    png = result.outputs[0]
    assert png.mime_type == "image/png" and png.data == b"" and png.kept_path
    kept = ex.run(f"import sys; sys.stdout.write(open({png.kept_path!r}, 'rb').read()[:8].hex())", "python")
    assert bytes.fromhex(kept.stdout) == PNG_SIGNATURE


@pytest.mark.parametrize("mode", ["stateless", "session", "stateful"])
def test_changed_files_are_listed_in_every_mode(executor_factory: ExecutorFactory, mode: str) -> None:
    ex = executor_factory(session=mode != "stateless", stateful=mode == "stateful")
    ex.run("printf keep > same.txt", "sh")
    shell = ex.run("mkdir -p out && printf 'a,b\\n' > out/t.csv", "sh")
    assert [(f.path, f.size, f.sha256) for f in shell.files] == [
        ("out/t.csv", 4, hashlib.sha256(b"a,b\n").hexdigest())
    ]
    python = ex.run("open('out/t.csv', 'a').write('c,d\\n')\nopen('new.bin', 'wb').write(b'1')", "python")
    assert [f.path for f in python.files] == ["new.bin", "out/t.csv"]
    seed = ex.execute_code_blocks([CodeBlock("printf z > z.txt", "sh")])
    assert [f.path for f in seed.files] == ["z.txt"] and seed.output == ""
