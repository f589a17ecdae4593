"""docs/architecture.md is the module map: it names every module, and every module it names exists.
Also: SQL text lives only under simsearch/db/ (and migrations/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "simsearch"
SQL_STATEMENT = re.compile(
    r"""["'](?:\s*)(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(?:INDEX|TABLE)|"""
    r"""DROP\s+(?:INDEX|TABLE)|COPY\s+\w+|ANALYZE|TRUNCATE|SET\s+LOCAL)\b""",
    re.IGNORECASE,
)


def _mapped_modules() -> set[str]:
    """'folder/file' for every row of the map's table."""
    found: set[str] = set()
    folder = ""
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        if cells[0]:
            folder = cells[0].strip("`")
        found.add(folder + cells[1].strip("`"))
    return found


def _package_modules() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and "migrations" not in path.parts
    }


def test_the_map_names_every_module_and_nothing_else() -> None:
    mapped = _mapped_modules()
    modules = _package_modules()
    assert "migrations/versions/*.py" in mapped
    mapped.discard("migrations/versions/*.py")
    assert sorted(modules - mapped) == [], "modules missing from docs/architecture.md"
    assert sorted(mapped - modules) == [], "docs/architecture.md names modules that do not exist"


def test_sql_statements_live_only_in_the_db_package() -> None:
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if "db" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SQL_STATEMENT.search(line):
                outside.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert outside == []


def test_the_readme_links_the_map() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject.toml lists packages by hand (migrations live outside the package): a new
    subpackage missing there works in an editable install and is absent from a real one."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    packages = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in PACKAGE.rglob("__init__.py")
        if "migrations" not in path.parts
    }
    assert sorted(packages - listed) == []
    data = project["tool"]["setuptools"]["package-data"]
    for folder in {p.parent for p in PACKAGE.rglob("*.html")}:
        name = ".".join(folder.relative_to(ROOT).parts)
        assert name in listed and "*.html" in data[name]
