"""The shape of hvd_compress's imports, read from the source with ``ast`` (nothing is imported).

* Imports flow one way (core -> codecs -> exchange -> frontends): no import circle among the
  modules of ``hvd_compress/``, counting imports inside functions too (a function-local import
  that closes a circle only postpones it to the first call).
* The layers: every module belongs to one (:data:`LAYERS`), and no module imports a higher one.
* Stack frames are read in one module only, :mod:`hvd_compress.horovod_names`, which says why.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Set

PACKAGE = Path(__file__).resolve().parents[1] / "hvd_compress"


# ---------------------------------------------------------------------------- the graph
def module_files(package: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package`` (``a/__init__.py`` is ``a``)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imported_modules(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The modules in ``known`` that module ``name`` imports anywhere: at module level, under
    ``if``/``try``, and inside functions and methods.

    ``import a.b`` names ``a.b``; ``from a import b`` names ``a.b`` when ``b`` is a module, else
    ``a``. The parent packages Python imports on the way (``a`` for ``a.b``) are not edges: a
    package ``__init__`` that imports its own submodules would otherwise close a circle with each.
    """
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            out |= submodules
            if len(submodules) < len(node.names):
                out.add(base)
    return (out & known) - {name}


def import_graph(package: Path) -> Dict[str, Set[str]]:
    files = module_files(package)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def import_circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One circle ``[a, b, ..., a]`` per group of modules that import each other."""
    return [_circle_through(min(group), group, graph) for group in circular_groups(graph)]


def circular_groups(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected groups of two or more modules (each module reaches every other)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Set[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _circle_through(start: str, group: Set[str], graph: Dict[str, Set[str]]) -> List[str]:
    """A shortest path start -> ... -> start inside ``group`` (breadth first)."""
    previous: Dict[str, Optional[str]] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])  # type: ignore[arg-type]
                    return path[::-1] + [start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected group but on no circle")


def test_no_import_circles_in_hvd_compress():
    graph = import_graph(PACKAGE)
    groups = circular_groups(graph)
    assert not groups, "import circles in hvd_compress/ (function-local imports included):\n" + "\n".join(
        f"  {' -> '.join(_circle_through(min(g), g, graph))}   (circular group: {', '.join(sorted(g))})" for g in groups
    )


def test_the_checker_sees_function_local_and_from_package_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from pkg import a\n",
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "",
        # a function-local import closes a -> sub.b -> c -> a
        "sub/b.py": "from pkg import c\n",
        "c.py": "def f():\n    from . import a\n    return a\n",
        # `from pkg import d` is an edge to pkg.d, not to pkg (whose __init__ imports a)
        "d.py": "import os\n",
        "e.py": "from pkg import d\n",
    }
    for rel, text in sources.items():
        (pkg / rel).write_text(textwrap.dedent(text))
    graph = import_graph(pkg)
    assert graph["pkg.e"] == {"pkg.d"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert import_circles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("def f():\n    return 1\n")
    assert import_circles(import_graph(pkg)) == []


# ---------------------------------------------------------------------------- layers
# Lowest first. A module is in the layer of the longest prefix listed ("{fw}": torch and
# tensorflow); a new module must be placed here, so where it sits is a decision.
LAYERS = [
    (
        "core",  # framework-neutral: the specs (wire formats), the registry, C kernels, numpy helpers
        [
            "hvd_compress.core",
            "hvd_compress.common",
            "hvd_compress.spec",
            "hvd_compress.codecs",
            "hvd_compress._native",
            "hvd_compress._lazy",
            "hvd_compress._moved",  # the old module paths kept importable (imports nothing of ours)
            "hvd_compress._discover",
            "hvd_compress.lowprec",
            "hvd_compress.elastic",
            "hvd_compress.data",
            "hvd_compress.horovod_names",
        ],
    ),
    # hvd_compress._native.ops: the torch binding of the C kernels (the TF one is tensorflow.native)
    (
        "codecs",
        [
            "{fw}.codecs",
            "{fw}.kernels",
            "{fw}.packing",
            "{fw}.finite",
            "{fw}.native",
            "{fw}.spec",
            "hvd_compress._native.ops",
        ],
    ),
    ("exchange", ["{fw}.collectives", "{fw}.dist", "{fw}.fusion", "{fw}.exchange", "{fw}.hierarchical", "{fw}.stats"]),
    (
        "frontends",  # what users call: the Horovod APIs, DDP, Lightning, Keras, elastic state
        [
            "{fw}",
            "{fw}.frontends",  # the frontends' own directory (hvd_compress/<framework>/frontends/)
            # the old paths of the modules now in {fw}.frontends: shims that import the moved
            # module (so they sit in its layer) and give it under the old name
            "{fw}.ddp",
            "{fw}.optimizer",
            "{fw}.stock",
            "{fw}.lightning",
            "{fw}.wrapped",
            "{fw}.elastic",
            "{fw}.tensorboard",
            "{fw}.broadcast",
            "{fw}.swarm",
            "{fw}.reduce",
            "{fw}.keras",
        ],
    ),
    (
        "tools",  # commands, benchmarks, demos, the conformance helper, the parameter-server study
        [
            "hvd_compress",
            "hvd_compress.bench",
            "hvd_compress.cli",
            "hvd_compress.run",
            "hvd_compress.ps",
            "hvd_compress.testing",
            "hvd_compress.demo",
            "{fw}.demo",
            "hvd_compress.horovod_build",
            "hvd_compress.codec_table",
        ],
    ),
]
FRAMEWORKS = ("hvd_compress.torch", "hvd_compress.tensorflow")


def layer_of(module: str) -> Optional[int]:
    """Index in :data:`LAYERS` of the longest listed prefix of ``module`` (``None``: unplaced)."""
    best: Optional[tuple] = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for pattern in prefixes:
            for prefix in {pattern.format(fw=fw) for fw in FRAMEWORKS}:
                if module == prefix or module.startswith(prefix + "."):
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), index)
    return None if best is None else best[1]


def test_every_module_is_in_a_layer():
    unplaced = sorted(m for m in import_graph(PACKAGE) if layer_of(m) is None)
    assert not unplaced, f"place these modules in LAYERS (tests/test_import_graph.py): {unplaced}"


def test_imports_never_go_up_a_layer():
    graph = import_graph(PACKAGE)
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"  # type: ignore[index]
        for m in sorted(graph)
        for d in sorted(graph[m])
        if layer_of(m) is not None and layer_of(d) is not None and layer_of(d) > layer_of(m)  # type: ignore[operator]
    ]
    assert not upward, (
        "imports against the layers (core -> codecs -> exchange -> frontends -> tools):\n  " + "\n  ".join(upward)
    )


def test_layer_of_takes_the_longest_prefix():
    assert LAYERS[layer_of("hvd_compress.torch.codecs.qsgd")][0] == "codecs"  # type: ignore[index]
    assert LAYERS[layer_of("hvd_compress.tensorflow.demo")][0] == "tools"  # type: ignore[index]
    assert LAYERS[layer_of("hvd_compress.torch")][0] == "frontends"  # type: ignore[index]
    assert LAYERS[layer_of("hvd_compress.torch.frontends.ddp")][0] == "frontends"  # type: ignore[index]
    assert LAYERS[layer_of("hvd_compress.tensorflow.frontends.keras.callbacks")][0] == "frontends"  # type: ignore[index]
    assert layer_of("elsewhere.module") is None


# ---------------------------------------------------------------------------- stack frames
FRAME_ATTRIBUTES = {"_getframe", "_current_frames", "f_back", "f_locals", "currentframe"}
INSPECT_FRAME_FUNCTIONS = {"stack", "trace", "currentframe", "getouterframes", "getinnerframes"}


def frame_readers(package: Path) -> Dict[str, List[str]]:
    """Module -> the frame-reading expressions in it (``sys._getframe``, ``frame.f_back``,
    ``frame.f_locals``, ``inspect.stack()``, ... and imports of those names)."""
    found: Dict[str, List[str]] = {}
    for name, path in module_files(package).items():
        hits = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if node.attr in FRAME_ATTRIBUTES or (owner == "inspect" and node.attr in INSPECT_FRAME_FUNCTIONS):
                    hits.append(f"line {node.lineno}: .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module in ("sys", "inspect"):
                hits += [
                    f"line {node.lineno}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name in FRAME_ATTRIBUTES | INSPECT_FRAME_FUNCTIONS
                ]
        if hits:
            found[name] = hits
    return found


def test_stack_frames_are_read_in_one_documented_module():
    readers = frame_readers(PACKAGE)
    assert set(readers) == {"hvd_compress.horovod_names"}, readers
    import hvd_compress.horovod_names as names

    doc = names.__doc__ or ""
    for point in (
        "_allreduce_grad_async",
        "_parameter_names",
        "allreduce_grads",
        "grads",
        "vars",
        "0.28.1",
        "anonymous",
    ):
        assert point in doc, f"horovod_names' docstring no longer says {point!r}"
