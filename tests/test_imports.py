"""The package's import graph has no loops (issue 26: one house).

Every import counts — at the top, inside functions, under TYPE_CHECKING — because a loop taken
lazily is still two modules that each need the other. `__init__.py` files only re-export and are
left out; a sub-package (pyfacedlib.datasets) is one node. `python tests/test_imports.py` prints the
graph: each module and the package modules it imports.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyfacedlib"


def _node(parts: list[str]) -> str | None:
    """The graph node of a module path inside the package (sub-packages collapse to one node)."""
    if not parts:
        return None  # the package itself (__init__)
    first = parts[0]
    if (PACKAGE / first).is_dir():
        return first
    if (PACKAGE / f"{first}.py").exists() or (PACKAGE / f"{first}.pyi").exists():
        return first
    return None  # a name re-exported by __init__


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (relative or absolute `pyfacedlib.` imports)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py":
            continue
        node = relative.parts[0] if len(relative.parts) > 1 else path.stem
        package_parts = list(relative.parts[:-1])  # the folder of this file inside the package
        edges = graph.setdefault(node, set())
        for statement in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[list[str]] = []
            if isinstance(statement, ast.ImportFrom):
                if statement.level:  # relative: from the folder `level - 1` steps up
                    module = package_parts[: len(package_parts) - (statement.level - 1)]
                    module = module + (statement.module.split(".") if statement.module else [])
                elif statement.module and statement.module.split(".")[0] == "pyfacedlib":
                    module = statement.module.split(".")[1:]
                else:
                    continue
                # from the package itself (`from . import models`): each name may be a module
                targets = [[alias.name] for alias in statement.names] if not module else [module]
            elif isinstance(statement, ast.Import):
                targets = [alias.name.split(".")[1:] for alias in statement.names
                           if alias.name.split(".")[0] == "pyfacedlib"]
            for target in targets:
                other = _node(target)
                if other is not None and other != node:
                    edges.add(other)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_loop():
    graph = import_graph()
    assert {"align", "chipcache", "photos", "embedder", "faces", "cli", "datasets"} <= set(graph)
    assert "align" in graph["chipcache"] and "align" in graph["photos"]  # the graph is really read
    loops = cycles(graph)
    assert not loops, "import loops: " + "; ".join(" <-> ".join(group) for group in loops)


def test_the_loop_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_alignment_lives_in_one_module():
    """AlignmentSettings, find_faces, as_chips and the chip/descriptor sizes are pyfacedlib.align's;
    the old homes hand on the same objects, and the sizes come from the C++ core."""
    import pyfacedlib as pfd
    from pyfacedlib import align, chipcache, embedder, photos
    from pyfacedlib._native import core

    assert chipcache.AlignmentSettings is align.AlignmentSettings is pfd.AlignmentSettings
    assert photos.find_faces is align.find_faces and embedder.as_chips is align.as_chips
    assert (align.CHIP_SIZE, align.DESCRIPTOR_SIZE) == (core.CHIP_SIZE, core.DESCRIPTOR_SIZE) == (150, 128)
    assert align.AlignmentSettings.for_photos().fallback == "none"
    assert align.AlignmentSettings.for_photos(fallback="cnn").fallback == "cnn"
    import pytest

    with pytest.raises(ValueError, match="centred"):
        align.AlignmentSettings.for_photos(fallback="cnn+center")
    # one definition of the preset: nothing else spells fallback="none" for photos
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert '"fallback": "none"' not in text and "fallback=\"none\")" not in text.replace(
            "for_photos(", ""), f"{path.name} spells out the photo preset instead of AlignmentSettings.for_photos()"


def test_moved_names_still_work():
    """Names that moved keep working: the same objects, or a DeprecationWarning and the new object."""
    import pytest

    import pyfacedlib as pfd
    from pyfacedlib import archive, archive_ray, faces, photos
    from pyfacedlib.bench import folder_pairs
    from pyfacedlib.evaluate import sample_pairs

    with pytest.warns(DeprecationWarning, match="load_faces"):
        assert faces.load_faces is pfd.load_faces
    with pytest.warns(DeprecationWarning, match="archive_ray"):
        assert archive.start_local_ray is archive_ray.start_local_ray
    assert folder_pairs is sample_pairs and photos.CHIP_SIZE == faces.CHIP_SIZE == 150


if __name__ == "__main__":
    for module, imports in sorted(import_graph().items()):
        print(f"{module:<16} -> {', '.join(sorted(imports)) or '-'}")
    sys.exit(1 if cycles(import_graph()) else 0)
