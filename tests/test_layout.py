"""The architecture holds: imports point one way, and no module reaches into another's private names."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "choreograph"

#: What each layer may import from the package (besides itself); see docs/architecture.md.
ALLOWED = {
    "_errors": set(),
    "_core": {"_errors", "events"},
    "events": {"_core", "_errors"},
    "durable": {"_core", "_errors", "events"},
    "executors": {"_core", "_errors", "events"},
    "_logging": {"_core", "_errors", "events"},
    "_listeners": {"_core", "_errors", "events"},
}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def package_imports(path: Path) -> set[str]:
    """The top-level package modules that *path* imports (``from ..durable import x`` -> ``durable``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for choreograph/x.py, 1 for choreograph/_core/x.py
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            up = node.level - 1
            if up < depth:  # within its own subpackage
                continue
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            found.update(name.split(".")[1] for name in names if name and name.startswith("choreograph."))
    return found


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if layer_of(path) in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_layer_imports_only_the_layers_below_it(path: Path):
    """`_core` knows nothing of stores, executors, logging or the coordinator; backends know nothing of each other."""
    layer = layer_of(path)
    imported = package_imports(path) - {layer}
    assert imported <= ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {sorted(imported - ALLOWED[layer])}"


def test_every_private_reach_stays_inside_its_module_and_says_why():
    """Each `noqa: SLF001` (a private name used off `self`) gives its reason; there are only a handful."""
    reaches = [
        (path, line)
        for path in PACKAGE.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "noqa: SLF001" in line
    ]
    assert all(" - " in line.split("noqa: SLF001", 1)[1] for _, line in reaches), reaches
    # Was 126 cross-module reaches before the architecture work. 21 since 0.5.0: choreograph/entities.py
    # runs a coordinator's plan with an entity's context class through three of the coordinator's private
    # names, until the coordinator has a seam for it.
    assert len(reaches) <= 21, len(reaches)
