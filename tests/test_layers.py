"""The layers import in one direction: core at the bottom, methods/tasks/reports on it, the harness on top.

Every import statement of the package is read (including the ones inside functions), resolved to
the top-level folder it reaches, and checked against what that folder may import. Then two fresh
interpreters check what actually gets loaded: the reports and ``editbench --help`` load no torch.
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
                if not target and node.module is None:  # `from .. import x`: x may itself be a folder
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
    assert not bad, f"{layer}/ may import only {sorted(ALLOWED[layer]) or 'nothing of editbench'}:\n" + "\n".join(bad)


def _loaded_after(code: str) -> set[str]:
    script = code + "\nimport sys\nprint('MODULES:', *sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.rpartition("MODULES:")[2].split())


def test_reports_load_no_torch():
    modules = " ".join(f"editbench.reports.{p.stem}" for p in (ROOT / "reports").glob("*.py") if p.stem != "__init__")
    loaded = _loaded_after(f"import importlib\nfor m in {modules!r}.split(): importlib.import_module(m)")
    assert "pandas" in loaded  # the imports did happen
    assert "torch" not in loaded


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["run", "--help"]])
def test_help_loads_no_torch_pandas_or_seaborn(argv):
    loaded = _loaded_after(
        "from editbench.harness.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit:\n    assert exit.code == 0\n")
    assert "click" in loaded
    assert not loaded & {"torch", "pandas", "seaborn", "transformers"}
