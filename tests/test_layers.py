"""The layers of docs/ARCHITECTURE.md, held: no module imports from a layer below its
own (lazy imports inside functions count too), and no module passes 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "edgechat"


def _layers() -> list[set[str]]:
    """The order ARCHITECTURE.md writes down: one numbered line a layer, its modules or
    packages in backticks."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## The layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\d+\. ", line)]
    return [set(re.findall(r"`([a-z_]+)/?`", line.split(":")[0])) for line in rows]


def _unit(path: Path) -> str:
    """The package a module belongs to, or the module's own name at the top level."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "edgechat":
                yield from (alias.name for alias in node.names)
            elif node.module.startswith("edgechat."):
                yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("edgechat."):
                    yield alias.name.split(".")[1]


def test_every_module_has_a_layer():
    placed = set().union(*_layers())
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert units <= placed, f"not in ARCHITECTURE.md's layers: {sorted(units - placed)}"


def test_imports_go_to_lower_layers_only():
    layers = _layers()
    rank = {unit: i for i, layer in enumerate(layers) for unit in layer}
    rank.update({"__version__": 0, "__init__": 0, "__main__": len(layers)})
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        mine = rank[_unit(path)]
        for target in _imports(path):
            if target in rank and target != _unit(path) and rank[target] >= mine:
                wrong.append(f"{path.relative_to(REPO)} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"split these by idea: {long}"
