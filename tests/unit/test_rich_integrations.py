"""Rich results in the integrations, pure parts: MCP content blocks and budget, no cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp.types import EmbeddedResource, ImageContent, TextContent

from kubectl_executor.boundary import ChangedFile, RichOutput
from kubectl_executor.executor import BlockResult
from kubectl_executor.mcp import models, server, tools
from kubectl_executor.mcp.tools import Reply

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40


def block(*outputs: RichOutput, files: tuple[ChangedFile, ...] = ()) -> BlockResult:
    return BlockResult(0, "out\n", "", outputs=outputs, files=files)


def test_images_are_image_content_and_html_a_text_resource_and_plain_text_only_alone() -> None:
    done = block(
        RichOutput(mime_type="image/png", data=PNG, metadata={"width": 3, "height": 2, "bundle": 0}),
        RichOutput(mime_type="text/plain", data="<Figure>", metadata={"bundle": 0}),
        RichOutput(mime_type="text/html", data="<b>t</b>", metadata={"bundle": 2}),
        RichOutput(mime_type="text/plain", data="42", metadata={"bundle": 3}),
        RichOutput(
            mime_type="image/png",
            data=b"",
            metadata={"bundle": 4, "size": 999},
            kept_path="/tmp/kx-logs/n.output-4.png",
        ),
    )
    entries, blocks = tools.rich_content(done, "pod-a")
    assert [type(b) for b in blocks] == [ImageContent, EmbeddedResource, TextContent]
    image, html, plain = blocks
    assert (
        isinstance(image, ImageContent)
        and base64.b64decode(image.data) == PNG
        and image.mime_type == "image/png"
    )
    assert isinstance(html, EmbeddedResource) and html.resource.mime_type == "text/html"
    assert getattr(html.resource, "text", None) == "<b>t</b>"
    assert str(html.resource.uri).startswith("kubectl-executor://pod-a/outputs/output-2.html")
    assert isinstance(plain, TextContent) and plain.text == "42"
    assert [e.in_content for e in entries] == [True, False, True, True, False]
    assert entries[4].kept_path and entries[4].size == 999
    assert entries[0].metadata == {"width": 3, "height": 2, "bundle": 0}


def test_run_text_names_outputs_and_files() -> None:
    done = block(
        RichOutput(mime_type="image/png", data=PNG, metadata={"width": 3, "height": 2}),
        files=(ChangedFile(path="a.csv", size=4, sha256="ab"),),
    )

    class Sb:
        pod_name = "pod-a"
        max_output_bytes = 1024

    result = tools.run_result(done, Sb(), None)  # type: ignore[arg-type]
    text = models.render_run(result)
    assert "output 1: image/png 3x2, 48 bytes, in this result's content" in text
    assert "files changed: a.csv (4 bytes)" in text
    assert result.model_dump(mode="json")["files"] == [{"path": "a.csv", "size": 4, "sha256": "ab"}]
    assert len(result.blocks) == 1


def test_outputs_over_the_connection_budget_are_left_out_not_the_run() -> None:
    big = RichOutput(mime_type="image/png", data=PNG * 1000)

    class Sb:
        pod_name = "pod-a"
        max_output_bytes = 1024

    result = tools.run_result(block(big), Sb(), None)  # type: ignore[arg-type]
    fitted: Any = server._fit(Reply(result, models.render_run(result), list(result.blocks)), 20_000)
    assert not fitted.is_error
    assert [c.type for c in fitted.content] == ["text"]
    assert "left out" in fitted.content[0].text
    assert fitted.structured_content["outputs"][0]["in_content"] is False
    assert fitted.structured_content["stdout"] == "out\n"


# -- the CLI's --save-outputs ---------------------------------------------------------------------


def test_save_outputs_writes_safe_names_inside_the_directory_only(tmp_path: Path) -> None:
    from kubectl_executor.boundary import CommandLineCodeResult
    from kubectl_executor.cli.base import Failure
    from kubectl_executor.cli.run import save_outputs

    result = CommandLineCodeResult(
        exit_code=0,
        output="",
        outputs=(
            RichOutput(mime_type="image/png", data=PNG),
            RichOutput(mime_type="../../etc/x", data="evil"),
            RichOutput(mime_type="text/html", data="", kept_path="/tmp/kx-logs/n.output-2.html"),
            RichOutput(mime_type="text/html", data="<p>é</p>"),
        ),
    )
    target = tmp_path / "out"
    written = save_outputs(result, target)
    assert [Path(p).name for p in written] == ["output-0.png", "output-1.x", "output-3.html"]
    assert all(Path(p).parent == target for p in written)
    assert (target / "output-0.png").read_bytes() == PNG
    assert (target / "output-3.html").read_text(encoding="utf-8") == "<p>é</p>"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "output-0.png",
        "output-1.x",
        "output-3.html",
    ]
    # A symlink planted under an output's name is not followed out of the directory.
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    (target / "output-0.png").unlink()
    (target / "output-0.png").symlink_to(outside)
    with pytest.raises(Failure):
        save_outputs(result, target)
    assert outside.read_bytes() == b"keep"
