"""The package's folders form layers: no folder imports a folder that imports it, the core imports only
itself, and the toy world is imported by nothing outside it (imports under `if TYPE_CHECKING:` never run
and are not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "rewrite"


def _room(module: str, depth: int) -> str:
    """`rewrite.core.site` -> `core`; a module in the package root -> `(root)`; depth 2 splits toyworld."""
    parts = module.split(".")[1:]
    if len(parts) <= 1:
        return "(root)"
    if depth == 2 and parts[0] == "toyworld" and len(parts) > 2:
        return f"toyworld.{parts[1]}"
    return parts[0]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("rewrite.")}


def _graph(depth: int) -> dict[str, set[str]]:
    modules = {".".join(("rewrite", *p.relative_to(PKG).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        src = _room(name, depth) if path.name != "__init__.py" else _room(name + ".__init__", depth)
        for imp in _imports(path):
            target = imp if imp in modules else imp.rpartition(".")[0]
            if target in modules:
                dst = _room(target, depth) if modules[target].name != "__init__.py" else _room(target + ".x", depth)
                if dst != src:
                    graph.setdefault(src, set()).add(dst)
    return graph


def _reaches(graph: dict[str, set[str]], a: str, b: str) -> bool:
    seen, todo = set(), [a]
    while todo:
        n = todo.pop()
        if n == b:
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(graph.get(n, ()))
    return False


def test_no_folder_depends_on_a_folder_that_depends_on_it() -> None:
    for depth in (1, 2):
        graph = _graph(depth)
        circles = sorted((a, b) for a, deps in graph.items() for b in deps if _reaches(graph, b, a))
        assert not circles, f"folders that import each other (directly or through others): {circles}"


def test_core_imports_only_core_and_nothing_imports_the_toy_world() -> None:
    graph = _graph(1)
    assert graph.get("core", set()) == set(), graph.get("core")
    assert [room for room, deps in graph.items() if "toyworld" in deps] == []
    assert "toyworld.requests" not in _graph(2).get("toyworld.world", set())
    assert "toyworld.models" not in _graph(2).get("toyworld.world", set())


def test_the_root_holds_only_entry_points_and_the_face() -> None:
    assert sorted(p.name for p in PKG.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py", "pipeline.py"]
