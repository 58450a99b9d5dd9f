"""The package's layers, as docs/architecture.md draws them, checked on every module's imports.

Each module under ``augengine/`` is parsed with ``ast`` (nothing is imported). The rules:

1. The top layer (the CLI, the demo, the Python API, experiments) is imported by nothing below it.
2. ``augengine.train`` is imported only by the top layer (and by itself).
3. ``augengine.runner`` is imported only by the top layer.
4. The kernels (``ops``, ``models``, ``explain``) import only each other and the foundation
   (errors, checks, array-module dispatch, checksums, precision, determinism).
5. No module imports a ``_private`` name from another module. A private *module* (``pkg/_x.py``)
   is its package's own: only modules inside ``pkg`` import it (``ops/_reconstruction_cuda.py``
   is imported by ``ops/reconstruction.py``; the reverse, which would close a circle, is rule 6).
6. The imports form no circle: neither those that run when a module is first imported nor,
   counting the imports inside functions too, any other. Imports for type hints only (under
   ``if TYPE_CHECKING:``) never run and close no circle; rules 1-5 still count them.

Rules 1-5 count every import, including those inside functions (a lazy import is still a
dependency). A finding that
belongs to work still under way is listed in ``ALLOWED`` with the issue that removes it.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import augengine

PACKAGE = Path(augengine.__file__).parent

TOP = ("augengine.cli", "augengine.demo", "augengine.__main__", "augengine.api",
       "augengine.experiments")
KERNELS = ("augengine.ops", "augengine.models", "augengine.explain")
FOUNDATION = ("augengine", "augengine.errors", "augengine.checks", "augengine._xp",
              "augengine.checksums", "augengine.precision", "augengine.determinism")

#: (importer, imported module) pairs that break a rule today, each with the work that ends it.
ALLOWED = {
}


@dataclass(frozen=True)
class Import:
    importer: str
    module: str          # the augengine module imported (a package means its __init__)
    name: str | None     # the name taken from it (``from module import name``), else None
    line: int
    at_import_time: bool
    type_only: bool = False  # under ``if TYPE_CHECKING:``: never runs, so it closes no circle

    def __str__(self) -> str:
        what = self.module + (f" (name {self.name})" if self.name else "")
        return f"{self.importer} imports {what} at line {self.line}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _type_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _runs_at_import(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return False
    return True


def _imports(importer: str, source: str, is_package: bool = False) -> list[Import]:
    tree = ast.parse(source, filename=importer)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = importer if is_package else importer.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        now, hint = _runs_at_import(node, parents), _type_only(node, parents)
        if isinstance(node, ast.Import):
            found += [Import(importer, alias.name, None, node.lineno, now, hint)
                      for alias in node.names if _within(alias.name, ("augengine",))]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not _within(base, ("augengine",)):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:   # ``from augengine import store``: the module itself
                    found.append(Import(importer, submodule, None, node.lineno, now, hint))
                else:
                    found.append(Import(importer, base, alias.name, node.lineno, now, hint))
    return found


IMPORTS = [imp for name, path in MODULES.items()
           for imp in _imports(name, path.read_text(encoding="utf-8"), path.name == "__init__.py")]


def _findings(rule) -> list[str]:
    return [str(imp) for imp in IMPORTS
            if rule(imp) and (imp.importer, imp.module) not in ALLOWED]


def test_every_module_is_parsed():
    assert {"augengine.ops.geometry", "augengine.manifest", "augengine.checks"} <= set(MODULES)
    assert len(IMPORTS) > 100, f"only {len(IMPORTS)} augengine imports found: is the parser blind?"


def test_nothing_below_the_top_layer_imports_it():
    assert _findings(lambda i: _within(i.module, TOP) and not _within(i.importer, TOP)) == []


def test_train_is_imported_only_from_the_top_layer():
    assert _findings(lambda i: _within(i.module, ("augengine.train",))
                     and not _within(i.importer, TOP + ("augengine.train",))) == []


def test_runner_is_imported_only_from_the_top_layer():
    assert _findings(lambda i: _within(i.module, ("augengine.runner",))
                     and not _within(i.importer, TOP + ("augengine.runner",))) == []


def test_kernels_import_only_kernels_and_the_foundation():
    assert _findings(lambda i: _within(i.importer, KERNELS)
                     and not (_within(i.module, KERNELS) or i.module in FOUNDATION)) == []


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_no_private_names_cross_modules():
    assert _findings(lambda i: i.name is not None and _private(i.name)
                     and i.module != i.importer) == []


def test_private_modules_stay_in_their_package():
    def outside(imp: Import) -> bool:
        parts = imp.module.split(".")
        private = [k for k, part in enumerate(parts) if _private(part)]
        if not private:
            return False
        owner = ".".join(parts[:private[0]])   # the package the private module belongs to
        return not _within(imp.importer, (owner,))
    assert _findings(outside) == []


def _cycle(at_import_time: bool) -> list[str] | None:
    """A circle of imports (the first found, as a path), or None."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        if (imp.at_import_time or not at_import_time) and not imp.type_only \
                and imp.module in graph \
                and imp.module != imp.importer and (imp.importer, imp.module) not in ALLOWED:
            graph[imp.importer].add(imp.module)
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circles():
    cycle = _cycle(at_import_time=True)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_import_circles_through_function_level_imports():
    # A lazy import still ties two modules together: reconstruction imported its CUDA back end
    # inside functions, which imported reconstruction back at the top; neither could move alone.
    cycle = _cycle(at_import_time=False)
    assert cycle is None, "import circle (counting imports inside functions): " + \
        " -> ".join(cycle)


@pytest.mark.parametrize("source, expected", [
    ("from augengine.ops.geometry import _image\n", "augengine.ops.geometry (name _image)"),
    ("from augengine import store\n", "augengine.store at line 1"),
    ("def f():\n    from ..train import loop\n", "augengine.train.loop at line 2"),
])
def test_the_parser_sees_each_form_of_import(source, expected):
    found = [str(imp) for imp in _imports("augengine.nst.example", source)]
    assert any(expected in text for text in found), found


def test_type_hint_imports_are_marked_and_others_are_not():
    source = ("from typing import TYPE_CHECKING\nfrom augengine import store\n"
              "if TYPE_CHECKING:\n    from augengine.plan import WorkItem\n")
    marked = {imp.module: imp.type_only for imp in _imports("augengine.nst.example", source)}
    assert marked == {"augengine.store": False, "augengine.plan": True}, marked
