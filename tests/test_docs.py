"""The README and docs/ link only to what exists: files, and headings within them."""

import re

import pytest

from synthaug.machinery.stages import STAGES

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{page.name} links to what does not exist: {broken}"


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_readmes_stage_table_is_the_declared_stages() -> None:
    """Each stage of `STAGES` has its row in "How a run works", in order, with its notebook
    and package (the data row above them is every notebook's first step, not a stage)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| stage | notebook | package |") :].split("\n\n")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    stages = [row for row in rows if row[0] != "data"]
    assert [row[0] for row in stages] == [stage.name for stage in STAGES]
    for row, stage in zip(stages, STAGES, strict=True):
        assert (stage.notebook or "") in row[1] and f"`{stage.package}`" in row[2], row
