"""Which code made a number: a hash of editbench's own source as installed, and its version.

A trained editor, a pocket model or a stored score is only as good as the code that made it, and a
version string does not change with every fix. So every run, every method's session, every cached
editor, pocket model and key statistics file carries a **code hash**: the SHA-256 of the source
files the package ships, taken from the installed package's folder. The same files are installed
by an editable install (the checkout), a wheel and an sdist (which builds the wheel), so the hash is
the same for all three; the checkout's tests, docs, fidelity studies and the shipped artefacts'
weights (``artifacts/``, checked by their own manifest) are not shipped source and are left out.

Two scopes, because they answer two questions (docs/provenance.md):

- :func:`package_code` covers every shipped source file: a run's results are the whole program's
  (scoring, the report's templates included). A run resumed under other code stops.
- :func:`component_code` covers what a *build* can execute: the named modules and every editbench
  module they import, at any depth (imports inside functions too), less :data:`INERT` modules that
  move bytes and cannot change a number. A cache key takes this one, so a fix to the report's
  templates, to the runner or to another method does not retrain an editor, while a fix to anything
  its training imports does.

Both are computed once per process (the whole package in about 10 ms, a component's closure in
about 20 ms on a loaded 2-core machine; ``docs/provenance.md``).
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from .._version import __version__

#: the installed package's folder: the checkout's root for an editable install,
#: ``site-packages/editbench/`` for a wheel
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: package data that is code (``[tool.setuptools.package-data]``): the report's templates
CODE_DATA = ("reports/templates",)
#: modules that store, lock, time, estimate or show progress: imported by builds but unable to
#: change what a build computes, so an edit to them leaves cache keys (and shipped artefacts) valid
INERT = frozenset({
    "core/artifacts.py",  # finding and verifying shipped entries
    "core/cache.py",  # atomic writes and locks
    "core/costs.py",  # memory and time estimates for the plan
    "core/faults.py",  # fault injection for the tests
    "core/identity.py",  # this file
    "core/progress.py",  # the progress bar
    "core/registry.py",  # registration by name
    "core/timing.py",  # phase timing
    "methods/hypernet/cost.py",  # the plan's estimates
    "methods/locate/cost.py",
})
#: how many hex digits a code hash keeps (64 bits: as the cache's other keys)
DIGITS = 16


def _packages(root: Path) -> list[Path]:
    """The package's folders: the root and every folder below it that is a package all the way
    up (an ``__init__.py`` in it and in each folder above), as setuptools ships them."""
    found, todo = [], [root]
    while todo:
        folder = todo.pop()
        if not (folder / "__init__.py").is_file():
            continue
        found.append(folder)
        todo += [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    return found


def source_files(root: Path = PACKAGE_ROOT) -> list[str]:
    """The shipped source, as sorted relative POSIX paths: each package folder's ``*.py`` and the
    templates. ``tests/``, ``docs/``, ``fidelity/`` and ``artifacts/`` hold no ``__init__.py``."""
    files = [p for folder in _packages(root) for p in folder.glob("*.py") if p.is_file()]
    for data in CODE_DATA:
        files += [p for p in (root / data).glob("*") if p.is_file()]
    return sorted(p.relative_to(root).as_posix() for p in files)


def read_source(root: Path, relative: str) -> bytes:
    """One file's bytes (the tests replace this to stand for an edited file)."""
    return (root / relative).read_bytes()


def digest_files(root: Path, files: Iterable[str]) -> str:
    """SHA-256 over each file's path, length and bytes, in sorted order."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        content = read_source(root, relative)
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:DIGITS]


@cache
def package_code(root: Path = PACKAGE_ROOT) -> str:
    """The hash of every shipped source file: what a run's identity records."""
    return digest_files(root, source_files(root))


def _module_file(root: Path, module: str) -> str | None:
    """``editbench.core.cache`` -> ``core/cache.py`` (or its package's ``__init__.py``)."""
    parts = module.split(".")[1:]
    for candidate in (Path(*parts).with_suffix(".py") if parts else None,
                      Path(*parts, "__init__.py")):
        if candidate is not None and (root / candidate).is_file():
            return candidate.as_posix()
    return None


def _imported(root: Path, relative: str) -> set[str]:
    """The editbench files one file imports, wherever in the file the import stands."""
    path = Path(relative)
    module = ["editbench", *path.with_suffix("").parts]
    package = module[:-1]  # what a relative import starts from, for a module or an __init__
    found: set[str] = set()
    for node in ast.walk(ast.parse(read_source(root, relative))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                base += node.module.split(".") if node.module else []
            else:
                base = (node.module or "").split(".")
            # `from . import x` and `from .m import f`: a submodule where there is one, else m
            names = [".".join([*base, a.name]) for a in node.names] + [".".join(base)]
        for name in names:
            if name.split(".")[0] == "editbench":
                file = _module_file(root, name)
                if file is not None:
                    found.add(file)
    return found


def closure(modules: Iterable[str], root: Path = PACKAGE_ROOT) -> list[str]:
    """The files of ``modules`` (``editbench.*`` names) and of everything they import, at any
    depth, less :data:`INERT`."""
    seen: set[str] = set()
    todo = [f for m in modules if (f := _module_file(root, m)) is not None]
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo += _imported(root, file) - seen
    return sorted(seen - INERT)


@cache
def component_code(*modules: str, root: Path = PACKAGE_ROOT) -> str:
    """The hash of what building with ``modules`` can run (:func:`closure`). A module from outside
    the package (a plugin's method) adds its own file's bytes."""
    inside = [m for m in modules if m.split(".")[0] == "editbench"]
    code = digest_files(root, closure(inside, root))
    outside = sorted(set(modules) - set(inside))
    if not outside:
        return code
    digest = hashlib.sha256(code.encode())
    for module in outside:
        file = getattr(sys.modules.get(module), "__file__", None)
        digest.update(f"\0{module}\0".encode() + (Path(file).read_bytes() if file else b""))
    return digest.hexdigest()[:DIGITS]


def forget() -> None:
    """Hash again on the next call (a test that stands for an edited file)."""
    package_code.cache_clear()
    component_code.cache_clear()


def code_identity() -> dict[str, str]:
    """What a run records of the code that runs it: ``{"editbench": version, "code": hash}``."""
    return {"editbench": __version__, "code": package_code()}


def describe_code(identity: dict | None) -> str:
    """``editbench 0.1.0 (code 1a2b3c4d5e6f7a8b)``; a record from before code hashes says so."""
    identity = identity or {}
    return (f"editbench {identity.get('editbench', '?')} "
            f"(code {identity.get('code') or 'not recorded'})")


def git_commit(root: Path = PACKAGE_ROOT) -> str | None:
    """The commit checked out at the package's folder when that folder is a git checkout's root
    (an editable install of a clone); None otherwise, in particular for a wheel installed inside
    someone's own repository, whose HEAD says nothing about editbench."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None
    top, sha = lines
    return sha if Path(top).resolve() == root.resolve() else None
