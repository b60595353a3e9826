"""The README is a front page, and every relative link in the docs resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")]
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a '# ' in a shell block is no heading)."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes for the headings in ``text`` (repeats get -1...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(text):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(text: str) -> list[str]:
    """The links in ``text`` that point into the repository."""
    return [
        target
        for line in prose_lines(text)
        for target in LINK.findall(line)
        if not re.match(r"[a-z]+:", target)
    ]


def test_the_readme_is_a_front_page_of_at_most_200_lines() -> None:
    lines = read(ROOT / "README.md").splitlines()
    assert len(lines) <= 200


def test_the_readme_links_to_every_document() -> None:
    linked = {
        (ROOT / target.split("#")[0]).resolve()
        for target in relative_links(read(ROOT / "README.md"))
    }
    assert set(DOCUMENTS) - {ROOT / "README.md"} <= linked


@pytest.mark.parametrize(
    "document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT))
)
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in relative_links(read(document)):
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.is_file():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(read(linked)):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert broken == []


def test_slug_follows_github() -> None:
    assert [
        slug("Batch: `make bench-batch`"),
        slug("Fan-out: large files across invocations"),
        slug("The `instances` format"),
    ] == [
        "batch-make-bench-batch",
        "fan-out-large-files-across-invocations",
        "the-instances-format",
    ]


def test_links_and_anchors_are_read_outside_code_blocks() -> None:
    page = (
        "# Title\n\n[ok](#title) [web](https://example.com) [file](missing.md)\n"
        "```sh\n# not a heading [nor](a-link.md)\n```\n## Title\n"
    )
    assert relative_links(page) == ["#title", "missing.md"]
    assert anchors(page) == {"title", "title-1"}
