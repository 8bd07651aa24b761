"""The package's shape: no import cycle among ``l2p`` modules, and no module over 400 lines.

The import graph is read from the source with :mod:`ast` (nothing is imported). An edge ``A -> B``
is an import in ``A`` of the ``l2p`` module ``B``, absolute or relative. ``from P import n`` is an
edge to ``P.n`` when that is a module, else to ``P``; importing ``P.Q.m`` is also an edge to the
packages ``P`` and ``P.Q`` (their ``__init__`` runs first) unless they contain ``A``. Imports under
``if TYPE_CHECKING:`` never run and are no edges.

Two graphs are checked:
- load time: module-level imports only (also inside module-level ``if``/``try``/``with`` blocks
  and class bodies). Imports inside functions are excluded here as lazy: they run when called,
  after every module has loaded. No cycle is allowed in this graph.
- with the lazy imports too: a cycle that only a function-level import closes still ties two
  modules to each other; none is allowed either.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "l2p"
MAX_LINES = 400

def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], lazy: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements in ``body`` that can run (see the module docstring); with ``lazy``, also
    those inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            found += _imports(node.orelse, lazy)
            if not _is_type_checking(node.test):
                found += _imports(node.body, lazy)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += _imports(node.body, lazy) if lazy else []
        else:  # try / with / for / while / class bodies, except handlers
            for block in ("body", "orelse", "finalbody", "handlers"):
                found += _imports(getattr(node, block, []), lazy)
    return found


def imports_of(name: str, path: Path, known: set[str], lazy: bool = False) -> set[str]:
    """The ``l2p`` modules that module ``name`` (file ``path``) imports at load time (with ``lazy``,
    also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path)).body, lazy):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
        targets.update(subs or [base])
    edges: set[str] = set()
    for t in targets:
        parts = t.split(".")
        for i in range(1, len(parts) + 1):  # the target and the packages whose __init__ it runs
            mod = ".".join(parts[:i])
            if mod in known and mod != name and not (name + ".").startswith(mod + "."):
                edges.add(mod)
    return edges


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the ``l2p`` modules it imports (see the module docstring)."""
    mods = modules()
    return {name: imports_of(name, path, set(mods), lazy) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]], ignore: set[frozenset[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None; an edge whose two ends form a pair in
    ``ignore`` is left out."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if frozenset((node, nxt)) in ignore:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_reader_sees_edges() -> None:
    """The reader resolves relative imports and package ``__init__`` edges, and skips lazy ones."""
    graph = import_graph()
    assert "l2p.sampling.loop" in graph["l2p.sampling.pipeline"]  # from .loop import ...
    assert "l2p.errors" in graph["l2p.bundle"]  # from .errors import ...
    assert "l2p.sampling.schedulers" in graph["l2p.sampling.families.qwenimage"]  # from ..schedulers import
    assert "l2p.predictor" in graph["l2p.sampling.methods"]  # runs l2p/predictor/__init__.py
    assert not any(m.startswith("l2p.export") for m in graph["l2p.families"])  # only under TYPE_CHECKING
    assert "l2p.export.exporter" not in graph["l2p.demo"]  # inside a function ...
    assert "l2p.export.exporter" in import_graph(lazy=True)["l2p.demo"]  # ... so lazy
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, set()) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}, {frozenset(("a", "b"))}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(), set())
    assert cycle is None, "import cycle at load time: " + " -> ".join(cycle or [])


def test_no_import_cycle_counting_lazy_imports() -> None:
    cycle = find_cycle(import_graph(lazy=True), set())
    assert cycle is None, "import cycle (closed by a function-level import): " + " -> ".join(cycle or [])


def test_modules_are_small() -> None:
    sizes = {p.relative_to(PACKAGE.parent).as_posix(): len(p.read_text().splitlines()) for p in modules().values()}
    big = {p: n for p, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them): {big}"
