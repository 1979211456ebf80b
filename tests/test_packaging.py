"""What pyproject.toml declares is what the package needs: every imported distribution, a lower
bound for the API used, the license file and a build backend that reads the metadata."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from editbench.core import identity

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml", "mlflow": "mlflow-skinny", "faiss": "faiss-cpu",
                 "sentence_transformers": "sentence-transformers"}


def _declared() -> dict[str, str]:
    """distribution -> its requirement, over the dependencies and every extra."""
    requirements = [*PROJECT["project"]["dependencies"],
                    *(r for extra in PROJECT["project"]["optional-dependencies"].values()
                      for r in extra)]
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower(): r for r in requirements}


def _lower_bound(requirement: str) -> tuple[int, ...]:
    found = re.search(r">=\s*([0-9.]+)", requirement)
    assert found, f"{requirement}: no lower bound"
    return tuple(int(p) for p in found.group(1).split(".") if p)


def _shipped_trees() -> list[ast.AST]:
    return [ast.parse(identity.read_source(ROOT, f)) for f in identity.source_files(ROOT)
            if f.endswith(".py")]


def test_every_imported_distribution_is_declared():
    imported = set()
    for tree in _shipped_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"editbench"}
    assert {"torch", "transformers", "markupsafe"} <= third_party  # the scan sees imports
    missing = {DISTRIBUTIONS.get(n, n) for n in third_party} - set(_declared())
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_one_way_of_passing_the_dtype_and_a_transformers_that_reads_it():
    """``dtype=`` is read by from_pretrained/from_config from transformers 4.56 on; before, it went
    to the model's config and the model loaded in float32 (checked in those releases' sources)."""
    spelled = {k.arg for tree in _shipped_trees() for node in ast.walk(tree)
               if isinstance(node, ast.Call) for k in node.keywords
               if k.arg in ("dtype", "torch_dtype")}
    assert "torch_dtype" not in spelled and "dtype" in spelled
    assert _lower_bound(_declared()["transformers"]) >= (4, 56)


def test_the_license_is_shipped_and_the_backend_reads_its_metadata():
    assert PROJECT["project"]["license"] == "Apache-2.0"
    files = PROJECT["project"]["license-files"]
    assert files == ["LICENSE"] and (ROOT / "LICENSE").read_text().split()[:4] == [
        "Apache", "License", "Version", "2.0,"]
    # an SPDX string and license-files are PEP 639, which setuptools reads from 77 on
    (backend,) = [r for r in PROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert _lower_bound(backend) >= (77,)


def test_device_map_auto_has_an_extra_for_accelerate():
    assert any(r.startswith("accelerate") for r in
               PROJECT["project"]["optional-dependencies"]["shard"])


def test_the_claimed_oldest_python_parses_every_shipped_file():
    """``requires-python`` claims 3.10: no 3.11+ syntax (``except*``, ...) in the shipped source,
    and the one 3.11 module the tests use (``tomllib``) is skipped there."""
    oldest = _lower_bound(PROJECT["project"]["requires-python"])
    assert oldest == (3, 10)
    for relative in identity.source_files(ROOT):
        if relative.endswith(".py"):
            ast.parse(identity.read_source(ROOT, relative), relative, feature_version=oldest[:2])
