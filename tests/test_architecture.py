"""The package's shape: no import cycles, and a public API that covers what plugins need."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tune_unlearn"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str], *, with_typing: bool = False) -> set[str]:
    """The package's modules ``path`` imports when it runs, anywhere in it (functions too),
    except under ``if TYPE_CHECKING:`` (unless ``with_typing``: then every import, the
    type-level graph). ``from a import b`` names ``a.b`` when that is a module."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if not with_typing and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules and name != "tune_unlearn"}


def import_graph(*, with_typing: bool = False) -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {
        module_name(p): runtime_imports(p, modules, with_typing=with_typing) - {module_name(p)} for p in paths
    }


def private_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, module)`` where a module imports a private module (``_name``) of a package
    it is not inside: a subpackage's private modules are its own."""
    found = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            parts = target.split(".")
            private = next(
                (i for i, part in enumerate(parts) if part.startswith("_") and part != "__init__"), None
            )
            if private is None:
                continue
            owner = ".".join(parts[:private])
            if importer != owner and not importer.startswith(owner + "."):
                found.append((importer, target))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


#: The subpackages, from the lowest layer up (docs/explanation.md, "Architecture"): a module may
#: import from its own layer and the ones below it, never from one above. The package's
#: top-level modules sit outside the order: the footing (``errors``, ``registry``,
#: ``hyperparameters``, ``_version``) below every layer, the commands (``cli``, ``gate``,
#: ``study_file``, ``catalog``, ``testing``) above them.
LAYERS = (
    "problems",
    "methods",
    "scoring",
    "config",
    "references",
    "report",
    "tracking",
    "trial",
    "validation",
    "study",
)
FOOTING = {"errors", "registry", "hyperparameters", "_version"}


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, module)`` where a module imports from a layer above its own, or a footing
    module imports any layer (or a command)."""
    rank = {name: i for i, name in enumerate(LAYERS)}

    def place(module: str) -> float:
        first = module.split(".")[1] if "." in module else ""
        if first in rank:
            return rank[first]
        return -1 if first in FOOTING else len(LAYERS)  # a command

    return sorted((a, t) for a, targets in graph.items() for t in targets if place(t) > place(a))


def test_the_import_graph_has_no_cycles() -> None:
    graph = import_graph()
    # the parser sees imports
    assert "tune_unlearn.config.study_config" in graph and graph["tune_unlearn.study.runner"]
    assert cycles(graph) == []


def test_every_module_imports_only_from_its_layer_or_below() -> None:
    """The folders are the layers: with ``TYPE_CHECKING`` imports too, nothing reaches up."""
    graph = import_graph(with_typing=True)
    packages = {m.split(".")[1] for m in graph if m.count(".") >= 2}
    assert packages == set(LAYERS)  # every subpackage has its place in the order
    assert layer_violations(graph) == []


def test_the_layer_check_finds_an_import_that_reaches_up() -> None:
    graph = {
        "tune_unlearn.scoring.metrics": {"tune_unlearn.problems", "tune_unlearn.study.runner"},
        "tune_unlearn.registry": {"tune_unlearn.cli"},
        "tune_unlearn.cli": {"tune_unlearn.study.runner"},
    }
    assert layer_violations(graph) == [
        ("tune_unlearn.registry", "tune_unlearn.cli"),
        ("tune_unlearn.scoring.metrics", "tune_unlearn.study.runner"),
    ]


def test_the_type_level_import_graph_has_no_cycles_either() -> None:
    """With the imports under ``TYPE_CHECKING`` too: a module that needs another's types and
    is needed back by it is one module split in two."""
    assert cycles(import_graph(with_typing=True)) == []


def test_no_module_imports_another_subpackage_s_private_module() -> None:
    assert private_imports(import_graph(with_typing=True)) == []


def test_the_private_import_finder_finds_one() -> None:
    graph = {
        "pkg.a": {"pkg.methods._grad"},  # outside methods: a private import
        "pkg.methods._base": {"pkg.methods._grad"},  # inside: its own
        "pkg.methods": {"pkg.methods._base"},
    }
    assert private_imports(graph) == [("pkg.a", "pkg.methods._grad")]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_public_name_resolves_and_the_guide_imports_only_public_names() -> None:
    import re

    import tune_unlearn

    for name in tune_unlearn.__all__:
        assert getattr(tune_unlearn, name) is not None, name
    guide = (PACKAGE.parent / "docs" / "guide.md").read_text()
    imports = re.findall(r"^\s*(?:from|import) (tune_unlearn[\w.]*)", guide, flags=re.MULTILINE)
    assert imports  # the guide's code does import the package
    private = [module for module in imports if any(part.startswith("_") for part in module.split("."))]
    assert private == []


def test_importing_the_package_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    heavy = "('torch', 'optuna', 'mlflow')"
    code = f"import sys, tune_unlearn; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_tests_mirror_the_package() -> None:
    tests = PACKAGE.parent / "tests"
    folders = {p.parent.name for p in tests.glob("*/test_*.py")}
    assert folders == set(LAYERS)
