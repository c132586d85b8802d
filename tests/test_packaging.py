"""Each package stands alone: its own version, Python >= 3.11, and only the dependencies it imports."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())


def _project(path: Path) -> dict[str, object]:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _dep_names(path: Path) -> set[str]:
    deps = _project(path).get("dependencies", [])
    assert isinstance(deps, list)
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps}


def test_there_are_the_four_packages() -> None:
    assert [p.name for p in PACKAGES] == [
        "worker-runtime-client",
        "worker-runtime-core",
        "worker-runtime-http",
        "worker-runtime-store-fs",
    ]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_package_metadata(package: Path) -> None:
    project = _project(package)
    assert project["name"] == package.name
    assert project["requires-python"] == ">=3.11"
    import_name = package.name.replace("-", "_")
    src = package / "src" / import_name
    assert (src / "py.typed").exists()
    assert (package / "README.md").exists()


def test_core_depends_on_msgspec_and_anyio_only() -> None:
    assert _dep_names(ROOT / "packages" / "worker-runtime-core") == {"msgspec", "anyio"}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_declared_dependencies_are_imported(package: Path) -> None:
    """Every declared third-party dependency is imported somewhere in the package's source, or named there as a
    string (uvicorn loads its HTTP parser by name: ``http="httptools"``)."""
    import_name = package.name.replace("-", "_")
    source = "\n".join(f.read_text() for f in (package / "src" / import_name).rglob("*.py"))
    for dep in _dep_names(package):
        module = dep.replace("-", "_")
        imported = re.search(rf"^\s*(import|from) {module}\b", source, flags=re.M)
        assert imported or f'"{module}"' in source, f"{package.name} declares {dep} and never uses it"


def _imported_modules(tree: ast.Module) -> list[str]:
    """Every module a source imports, with each name taken from it (``a.b`` and ``a.b.name``)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


@pytest.mark.parametrize("package", [p for p in PACKAGES if p.name != "worker-runtime-core"], ids=lambda p: p.name)
def test_siblings_import_nothing_private_from_core(package: Path) -> None:
    private = []
    for source in sorted((package / "src").rglob("*.py")):
        for module in _imported_modules(ast.parse(source.read_text())):
            parts = module.split(".")
            if parts[0] == "worker_runtime_core" and any(
                p.startswith("_") and not p.startswith("__") for p in parts[1:]
            ):
                private.append(f"{source.relative_to(ROOT)}: {module}")
    assert private == []
