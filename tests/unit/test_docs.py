"""The documentation a user gets with the repository: every relative link in README.md and
docs/*.md leads to a file (and heading) of the repository, and nothing sends readers to files
outside it (the developers' design notes are not shipped)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# where users and contributors read: text files only, generated folders left out
SCANNED = (
    "README.md",
    "docs",
    "src/msglab",
    "tests",
    "compose",
    ".ci",
    "Makefile",
    "pyproject.toml",
)
SKIPPED_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
OUTSIDE = "../" + "shared/"  # spelled in two parts so this file does not match itself
# the developers' design notes, which live outside the repository
NOTES = re.compile(r"\b(?:ARCHITECTURE|GUARANTEES|DURABILITY|STYLE|INFRA)\.md\b")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text], which may hold [brackets]
    r"\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)"  # (target "title")
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans (links there are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def links(markdown: str) -> list[str]:
    """Every link target of inline links, images and reference definitions."""
    text = prose(markdown)
    found = [m.group(1) for m in INLINE_LINK.finditer(text)]
    found += [m.group(1) for m in REFERENCE.finditer(text)]
    return [t[1:-1] if t.startswith("<") else t for t in found]


def slug(heading: str) -> str:
    """A heading's anchor as GitHub renders it: lowercase, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``doc`` that lead nowhere inside ``root``, with the reason."""
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a URL, not a file of the repository
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return broken


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            parts = set(path.relative_to(ROOT).parts)
            if path.is_file() and not parts & SKIPPED_DIRS:
                files.append(path)
    return files


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # a binary file


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_of_the_repository(doc: Path) -> None:
    broken = broken_links(doc)
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n[ok](#title) [gone](missing.md) [far](../../../x.md) [anchor](#nowhere)\n"
        "`[code](not-a-link.md)`\n```\n[fenced](not-a-link.md)\n```\n[web](https://example.org)\n"
    )
    found = broken_links(doc, root=tmp_path)
    assert [f.split(":")[0] for f in found] == ["missing.md", "../../../x.md", "#nowhere"]


def test_the_readme_lists_the_documentation() -> None:
    readme_links = set(links((ROOT / "README.md").read_text(encoding="utf-8")))
    for doc in ("docs/guarantees.md", "docs/architecture.md", "docs/evidence.md"):
        assert doc in readme_links, f"README.md does not link {doc}"


def test_nothing_refers_to_files_outside_the_repository() -> None:
    offenders = []
    for path in scanned_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE in line or NOTES.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "the design notes are not in the repository:\n" + "\n".join(offenders)


def test_no_merge_conflict_markers_are_left() -> None:
    root = Path(__file__).resolve().parents[2]
    files = [root / "README.md", *root.glob("docs/*.md"), *root.glob("src/**/*.py")]
    files += [*root.glob("tests/**/*.py"), *root.glob("compose/**/*")]
    marked = [
        f"{path.relative_to(root)}:{i}"
        for path in files
        if path.is_file()
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="
    ]
    assert not marked
