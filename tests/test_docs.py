"""The README's layout map names every module, and its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_layout_map_names_every_module() -> None:
    layout = README[README.index("## Layout"):]
    missing = []
    for package in ("search", "objectives"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            inside = path.relative_to(ROOT / package).as_posix()
            if not re.search(rf"`{re.escape(inside)}`", layout):
                missing.append(f"{package}/{inside}")
    assert missing == []


def test_every_linked_document_exists() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)\)", text):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"
