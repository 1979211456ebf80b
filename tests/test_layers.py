"""The layers import in one direction: core at the bottom, methods/tasks/reports on it, the harness
on top.

Every import statement of the package is read (including the ones inside functions), resolved to
the top-level folder it reaches, and checked against what that folder may import. The same
statements, resolved to modules, must form no cycle, and nothing outside the command line
(``editbench.harness.cli``) may import it. Then fresh interpreters check what actually gets
loaded: the reports and ``editbench --help`` load no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "methods", "tasks", "reports", "harness")
#: what each folder may import of editbench besides itself
ALLOWED = {
    "core": set(),
    "methods": {"core"},
    "tasks": {"core"},
    "reports": {"core"},
    "harness": {"core", "methods", "tasks", "reports"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level folder) of every editbench import in ``path``; "" for the package root."""
    folder = path.relative_to(ROOT).parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(folder[: len(folder) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                # `from .. import x`: x may itself be a folder
                if not target and node.module is None:
                    target = [alias.name for alias in node.names][:1]
                found.append((node.lineno, target[0] if target else ""))
            elif node.module and node.module.split(".")[0] == "editbench":
                parts = node.module.split(".")
                found.append((node.lineno, parts[1] if len(parts) > 1 else ""))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "editbench":
                    found.append((node.lineno, parts[1] if len(parts) > 1 else ""))
    return found


def test_the_resolver_reads_relative_and_absolute_imports(tmp_path):
    sample = ROOT / "methods" / "hypernet" / "core.py"
    targets = {t for _, t in _imports(sample)}
    assert "core" in targets and "methods" in targets


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer):
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, target in _imports(path):
            if target in LAYERS and target != layer and target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, (
        f"{layer}/ may import only {sorted(ALLOWED[layer]) or 'nothing of editbench'}:\n"
        + "\n".join(bad)
    )


def _module_name(path: Path) -> str:
    parts = ["editbench", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PACKAGE_FILES = sorted(
    p for p in ROOT.rglob("*.py")
    if not {"tests", ".venv", "build", "docs", ".pkgroot"} & set(p.relative_to(ROOT).parts)
)
MODULES = {_module_name(p): p for p in PACKAGE_FILES}


def _module_imports(path: Path) -> set[str]:
    """Every editbench module ``path`` imports, at its top or inside a function (only
    ``if TYPE_CHECKING:`` blocks, which never run, are left out): ``from .x import y`` reaches the
    module ``x.y`` when there is one, else ``x``."""
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "editbench")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(
                    parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                )
            else:
                base = node.module or ""
            if base.split(".")[0] == "editbench":
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in MODULES and name != own}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    graph = {name: _module_imports(path) for name, path in MODULES.items()}
    assert sum(len(targets) for targets in graph.values()) > 200  # the walk did read the imports
    cycles = _cycles(graph)
    assert not cycles, (
        "import cycles (imports inside functions count):\n"
        + "\n".join(" <-> ".join(c) for c in cycles)
    )


def test_nothing_outside_the_command_line_imports_it():
    cli = "editbench.harness.cli"
    bad = [f"{name} imports {target}" for name, path in MODULES.items() if not name.startswith(cli)
           for target in _module_imports(path) if target == cli or target.startswith(cli + ".")]
    assert not bad, "the library must not depend on its command line:\n" + "\n".join(bad)


def _loaded_after(code: str) -> set[str]:
    script = (
        code + "\nimport sys\nprint('MODULES:', *sorted({m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.rpartition("MODULES:")[2].split())


def test_reports_load_no_torch():
    modules = " ".join(
        f"editbench.reports.{p.stem}"
        for p in (ROOT / "reports").glob("*.py")
        if p.stem != "__init__"
    )
    loaded = _loaded_after(
        f"import importlib\nfor m in {modules!r}.split(): importlib.import_module(m)"
    )
    assert "pandas" in loaded  # the imports did happen
    assert "torch" not in loaded


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["run", "--help"]])
def test_help_loads_no_torch_pandas_or_seaborn(argv):
    loaded = _loaded_after(
        "from editbench.harness.cli.group import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit:\n    assert exit.code == 0\n")
    assert "click" in loaded
    assert not loaded & {"torch", "pandas", "seaborn", "transformers"}
