"""Relative links and heading anchors of Markdown files, as GitHub renders them.

The docs link to each other by file and heading (`docs/operations.md#a-compose-cluster`), and
headings get renamed; this finds the links that no longer land anywhere. It reads only what
GitHub turns into links: text in fenced code blocks and inline code spans is not Markdown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_LINK_TEXT = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


@dataclass(frozen=True)
class Link:
    """One link target as written (`path#anchor`), and the line it is on."""

    line: int
    target: str


def prose_lines(text: str) -> list[tuple[int, str]]:
    """Numbered lines outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if opening:
            marker = opening.group(1)
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (github-slugger): its rendered text, lower-cased,
    punctuation dropped except `-` and `_`, each space a `-`."""
    text = CODE_SPAN.sub(lambda span: span.group(0).strip("`"), heading)
    text = INLINE_LINK_TEXT.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a document; a repeated heading gets `-1`, `-2`, … as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(text: str) -> list[Link]:
    """Links to files of the repository or headings (no scheme), outside code."""
    links: list[Link] = []
    for number, line in prose_lines(text):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match.group(1)
            if not EXTERNAL.match(target):
                links.append(Link(number, target))
    return links


def broken_links(document: Path, root: Path) -> list[str]:
    """One line per link of `document` whose file (inside `root`) or heading does not exist."""
    problems: list[str] = []
    for link in relative_links(document.read_text()):
        path_part, _, anchor = link.target.partition("#")
        target = (document.parent / path_part).resolve() if path_part else document
        where = f"{document.relative_to(root)}:{link.line}: {link.target}"
        if not target.is_relative_to(root) or not target.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
            problems.append(f"{where} (no such heading in {target.relative_to(root)})")
    return problems
