"""Every relative link in README.md and docs/*.md points to a file that exists, and every
``#anchor`` to a heading of that file (GitHub's rule for heading anchors). A page that moves, or a
heading that is renamed, breaks this test instead of a reader's click."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Pages linked from the README that other branches write (the lead merges them). While a page is
# absent here, its links are reported as skipped with this reason; once it exists, they are checked.
PENDING = {}

LINK = re.compile(r"(?<!!)\[(?:[^\]\n]|\][^(\n])*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a link in a code sample is not a link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            links.append(target)
    return links


CASES = [(p.relative_to(ROOT).as_posix(), t) for p in doc_files() for t in relative_links(p)]


def test_the_pages_have_links_to_check() -> None:
    # The README links every docs page: if the parsing broke, this list would be empty.
    readme_targets = {t.split("#")[0] for src, t in CASES if src == "README.md"}
    assert {"docs/mcp.md", "docs/testing.md", "docs/reliability.md"} <= readme_targets


@pytest.mark.parametrize(("source", "target"), CASES)
def test_relative_link_resolves(source: str, target: str) -> None:
    page, _, anchor = target.partition("#")
    base = (ROOT / source).parent
    dest = (base / page).resolve() if page else ROOT / source
    rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
    if not dest.exists() and rel in PENDING:
        pytest.skip(f"{rel} is not on this branch yet ({PENDING[rel]})")
    assert dest.exists(), f"{source}: link {target!r} points to {rel}, which does not exist"
    if anchor:
        assert dest.suffix == ".md", f"{source}: anchor {target!r} into a file that is not markdown"
        assert anchor in anchors(dest), (
            f"{source}: link {target!r}: no heading with anchor #{anchor} in {rel} (has: {sorted(anchors(dest))})"
        )


def test_slug_follows_githubs_rule() -> None:
    assert slug("Sessions, stateful Python, warm pools") == "sessions-stateful-python-warm-pools"
    assert slug("Other projects' own test suites") == "other-projects-own-test-suites"
    assert slug("AutoGen 0.4+: `KubectlCodeExecutor`") == "autogen-04-kubectlcodeexecutor"
    assert slug("Cleaning up: gc") == "cleaning-up-gc"
