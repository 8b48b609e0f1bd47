"""The README and the pages under docs/ link only to files that exist (issue 35)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def broken_links(page: Path) -> list[str]:
    found = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        if not (page.parent / target).exists():
            found.append(f"{page.relative_to(REPO)}: {target}")
    return found


def test_every_local_link_of_the_docs_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) > 10
    assert not [b for page in pages for b in broken_links(page)]


def test_a_broken_link_is_found(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("[there](missing.md) [fine](page.md) [web](https://example.org/x.md)")
    assert broken_links(page) == ["page.md: missing.md"]
