"""The documentation holds together: every setting is documented, every link lands, and the
README stays a front door."""

from __future__ import annotations

from pathlib import Path

import pytest

from replication.serving.env import MigrationCredentials
from service.settings import Settings
from tests.unit.markdown_links import anchors, broken_links, github_slug, relative_links

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250


@pytest.mark.parametrize("document", ["docs/configuration.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    """Every service setting is named in the settings reference and in `.env.example`.

    The README used to carry a third copy of the settings table; it is now a short front door
    that links the reference instead (checked below), so the two reference files are where
    every name must appear, as strictly as before.
    """
    text = (ROOT / document).read_text()
    names = [f"REPLIKIT_{name.upper()}" for name in Settings.model_fields]
    names += [f"REPLIKIT_MIGRATION_{name.upper()}" for name in MigrationCredentials.model_fields]
    missing = [name for name in names if name not in text]
    assert not missing, f"{document} lacks {missing}"


def test_the_readme_links_the_settings_reference() -> None:
    targets = {link.target.partition("#")[0] for link in relative_links(_read("README.md"))}
    assert "docs/configuration.md" in targets


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_lands_on_a_file_and_heading(document: Path) -> None:
    problems = broken_links(document, ROOT)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_stays_a_front_door() -> None:
    lines = _read("README.md").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/ (at most {README_MAX_LINES})"
    )


def test_every_docs_page_is_linked_from_the_readme() -> None:
    targets = {link.target.partition("#")[0] for link in relative_links(_read("README.md"))}
    pages = {f"docs/{page.name}" for page in DOCUMENTS if page.parent.name == "docs"}
    assert not pages - targets, f"README.md links none of {sorted(pages - targets)}"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        (
            "`replikit experiment failover --manager patroni` (automatic failover)",
            "replikit-experiment-failover---manager-patroni-automatic-failover",
        ),
        (
            "Timing: `ttl` 20, `loop_wait` 1, `retry_timeout` 5",
            "timing-ttl-20-loop_wait-1-retry_timeout-5",
        ),
        (
            "Reads on plain asyncpg, and uploads, after issue 13, part three",
            "reads-on-plain-asyncpg-and-uploads-after-issue-13-part-three",
        ),
        ("See [the API](docs/api.md) *now*", "see-the-api-now"),
    ],
)
def test_headings_get_githubs_anchors(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_the_link_check_finds_missing_files_headings_and_ignores_code(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Title\n\n## Part\n\n## Part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "[ok](other.md#part) [ok](other.md#part-1) [ok](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [outside](../x.md)\n"
        "`[code](missing.md)`\n"
        "```\n# not a heading\n[in a block](missing.md)\n```\n"
        "[no such](#not-a-heading)\n"
    )
    assert anchors(page.read_text()) == {"page"}
    problems = broken_links(page, tmp_path)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "missing.md (no such file)",
        "other.md#nowhere (no such heading in other.md)",
        "../x.md (no such file)",
        "#not-a-heading (no such heading in page.md)",
    ]


def _read(name: str) -> str:
    return (ROOT / name).read_text()
