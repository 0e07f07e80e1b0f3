"""Imports point one way: no module imports itself back through others, and no layer reaches up.

Every import of the four packages counts, module level or inside a function (read from the
source with ``ast``, so nothing is executed). Layers, top down:

* commands: ``engine.run``, ``engine.eval``, ``engine.prepare_gt``, ``engine.batch`` (the only
  importer of ray), ``export.onnx`` (the exporter and its command; nothing imports it), ``profiling``;
* ``checks``: the kernels' test cases, which ``profiling.gpu_check`` and the tests run;
* the seam: ``engine.session`` builds a ``Session`` (backbone x kernels); ``engine.pipeline`` runs it;
* the stages and their backends: ``engine.backbone``, ``engine.encoding``, ..., ``engine.c_kernels``,
  ``kernels``, ``export``;
* leaves: ``engine.errors``, ``engine.classes``, ``engine.budget``, ``engine.atomic``,
  ``engine.environment``, ``engine.host_allocator``, ``engine.worker_threads``, ``engine.onednn``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "kernels", "export", "profiling", "checks")
LEAVES = ("engine.errors", "engine.classes", "engine.budget", "engine.atomic", "engine.environment",
          "engine.host_allocator", "engine.worker_threads", "engine.onednn")
COMMANDS = ("engine.run", "engine.eval", "engine.prepare_gt", "engine.batch", "export.onnx", "profiling")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_cycles():
    graph = _import_graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_leaves_import_nothing_of_the_project():
    graph = _import_graph()
    assert {leaf: sorted(graph[leaf]) for leaf in LEAVES if graph[leaf]} == {}


def test_no_module_imports_a_command():
    graph = _import_graph()
    offenders = {module: sorted(t for t in targets if _within(t, COMMANDS))
                 for module, targets in graph.items() if not _within(module, COMMANDS)}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_stages_do_not_import_the_seam():
    """Only commands import ``engine.session``; only the seam and commands import ``engine.pipeline``."""
    graph = _import_graph()
    seam = ("engine.session", "engine.pipeline")
    offenders = {module: sorted(t for t in targets if _within(t, seam))
                 for module, targets in graph.items() if not _within(module, (*COMMANDS, *seam))}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_only_commands_import_the_checks():
    """The engine, its kernels and the exporters never import ``checks`` (test code)."""
    graph = _import_graph()
    offenders = {module: sorted(t for t in targets if _within(t, ("checks",)))
                 for module, targets in graph.items() if not _within(module, (*COMMANDS, "checks"))}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_only_engine_batch_imports_ray():
    """Ray is an optional extra (``.[cluster]``): ``engine.run`` and the rest never import it."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            else:
                continue
            if "ray" in roots and not _within(name, ("engine.batch",)):
                offenders.append(name)
    assert offenders == []
