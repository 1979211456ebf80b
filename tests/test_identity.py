"""Code identity (core/identity.py): what is hashed, what each cache key covers, and that an entry
made by other code is never reused."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from test_hypernet import make_context
from test_runner import _spec, recorders  # noqa: F401  (a fixture)

from editbench.core import identity
from editbench.core.store import load_results
from editbench.harness.plan.resolve import resolve
from editbench.harness.running.runner import Runner
from editbench.methods import METHODS
from editbench.methods.hypernet import storage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def edited(monkeypatch):
    """``edited(path)``: from now on this process sees ``path`` (relative to the package) with one
    more line, as if someone had fixed it; the hashes are taken again afterwards."""
    real = identity.read_source
    changed: set[str] = set()

    def read(root, relative):
        return real(root, relative) + (b"\n# a fix\n" if relative in changed else b"")

    monkeypatch.setattr(identity, "read_source", read)

    def edit(relative: str) -> None:
        assert (ROOT / relative).is_file(), relative
        changed.add(relative)
        identity.forget()

    yield edit
    identity.forget()


def _tree(root: Path) -> Path:
    for relative, text in {
        "__init__.py": "", "_version.py": "__version__ = '9'\n",
        "core/__init__.py": "", "core/a.py": "from .b import f\n", "core/b.py": "def f(): ...\n",
        "core/c.py": "x = 1\n", "reports/__init__.py": "", "reports/templates/page.html": "<p>\n",
        "tests/test_a.py": "def test(): ...\n", "docs/a.md": "#\n", "fidelity/run.py": "1\n",
        "artifacts/MANIFEST.json": "{}\n", "core/__pycache__/a.cpython-311.pyc": "x",
        "notapackage/m.py": "1\n",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_only_the_shipped_source_is_hashed_and_the_hash_does_not_depend_on_where_it_lies(tmp_path):
    root = _tree(tmp_path / "a" / "editbench")
    assert identity.source_files(root) == ["__init__.py", "_version.py", "core/__init__.py",
                                           "core/a.py", "core/b.py", "core/c.py",
                                           "reports/__init__.py", "reports/templates/page.html"]
    before = identity.digest_files(root, identity.source_files(root))
    for stray in ("tests/test_a.py", "docs/a.md", "fidelity/run.py", "notapackage/m.py",
                  "core/__pycache__/a.cpython-311.pyc"):
        (root / stray).write_text("changed\n")
    # an editable checkout, a wheel's site-packages folder: the same files, the same hash
    elsewhere = shutil.copytree(root, tmp_path / "site-packages" / "editbench")
    assert identity.digest_files(elsewhere, identity.source_files(elsewhere)) == before
    (root / "reports/templates/page.html").write_text("<p>changed\n")
    assert identity.digest_files(root, identity.source_files(root)) != before


def test_the_hashed_files_are_what_the_build_ships():
    """pyproject's packages and package data, less the artefacts (they have their manifest)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setup["package-dir"]

    def folder(package: str) -> Path:  # the longest mapped prefix, then the rest as folders
        prefix = max((p for p in mapped if package == p or package.startswith(p + ".")), key=len)
        return ROOT / mapped[prefix] / Path(*package[len(prefix):].split(".")[1:])

    expected = {p for package in setup["packages"] for p in folder(package).glob("*.py")}
    for package, patterns in setup["package-data"].items():
        expected |= {p for pattern in patterns if not pattern.startswith("artifacts")
                     for p in folder(package).glob(pattern) if p.is_file()}
    assert set(identity.source_files(ROOT)) == {p.relative_to(ROOT).as_posix() for p in expected}


def test_a_component_covers_what_its_build_imports_and_nothing_else():
    mend = set(identity.closure(["editbench.methods.mend"]))
    assert {"methods/mend.py", "methods/hypernet/training.py", "methods/hypernet/storage.py",
            "core/models.py", "core/tokenize.py"} <= mend
    assert not {f for f in mend if f.startswith(("harness/", "reports/", "tasks/"))}
    assert "methods/memit.py" not in mend and not mend & identity.INERT
    pocket = set(identity.closure(["editbench.tasks.pocket_model", "editbench.tasks.pocket"]))
    assert {"tasks/pocket_model.py", "tasks/pocket.py", "core/micro.py"} <= pocket
    assert all(f in identity.source_files() for f in identity.INERT)  # no stale exclusion


def test_an_edit_changes_the_keys_it_should_and_no_other(edited):
    package, mend = identity.package_code(), identity.component_code("editbench.methods.mend")
    pocket = identity.component_code("editbench.tasks.pocket_model", "editbench.tasks.pocket")
    edited("reports/templates/style.css")  # the page's look: runs differ, editors do not
    assert identity.package_code() != package
    assert identity.component_code("editbench.methods.mend") == mend
    edited("core/cache.py")  # inert: stores bytes, decides no number
    assert identity.component_code("editbench.methods.mend") == mend
    edited("core/tokenize.py")  # both trainings tokenise
    assert identity.component_code("editbench.methods.mend") != mend
    assert identity.component_code("editbench.tasks.pocket_model",
                                   "editbench.tasks.pocket") != pocket


def test_a_cached_editor_trained_by_other_code_is_retrained(micro_llama, tmp_path, monkeypatch,
                                                            edited):
    cls = METHODS["mend"]
    config = cls.Config(max_steps=2, val_every=1)
    fits: list[Path] = []
    real_fit = cls.fit

    def fit(self, folder, records):
        fits.append(folder)
        real_fit(self, folder, records)

    monkeypatch.setattr(cls, "fit", fit)
    cls(config, make_context(micro_llama, tmp_path)).prepare()
    cls(config, make_context(micro_llama, tmp_path)).prepare()
    assert len(fits) == 1  # the same code finds its cached editor
    first = json.loads((fits[0] / storage.CONFIG_FILE).read_text())["identity"]["code"]
    edited("tasks/pocket.py")  # not imported by the editor's training: still the same editor
    cls(config, make_context(micro_llama, tmp_path)).prepare()
    assert len(fits) == 1
    edited("methods/hypernet/training.py")  # a fix to training: the cached editor is not reused
    method = cls(config, make_context(micro_llama, tmp_path))
    method.prepare()
    assert len(fits) == 2 and fits[1] != fits[0] and storage.is_complete(fits[0])
    second = json.loads((fits[1] / storage.CONFIG_FILE).read_text())["identity"]["code"]
    assert second == method.training_code() != first
    assert fits[1].name.endswith(second) and fits[0].name.endswith(first)


def test_key_statistics_from_other_code_lie_apart(tmp_path, edited):
    from editbench.methods.locate import stats

    before = stats._stats_folder(tmp_path, "model", "corpus", 10, "cpu")
    edited("methods/locate/stats.py")
    assert stats._stats_folder(tmp_path, "model", "corpus", 10, "cpu") != before


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_is_recorded_only_for_a_checkout_of_editbench_itself(tmp_path):
    """A wheel installed in a virtual environment inside someone's repository must not record that
    repository's HEAD as editbench's commit."""
    user = tmp_path / "their-project"
    package = user / ".venv" / "lib" / "site-packages" / "editbench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    _git("init", "-q", cwd=user)
    (user / "mine.txt").write_text("theirs\n")
    _git("add", "mine.txt", cwd=user)
    _git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "theirs", cwd=user)
    assert identity.git_commit(package) is None
    assert identity.git_commit(user) == _git("rev-parse", "HEAD", cwd=user)
    assert identity.git_commit(tmp_path / "nowhere") is None


@pytest.mark.usefixtures("recorders")
def test_resuming_a_run_made_by_other_code_stops_in_one_line_naming_both(
    tmp_path, micro_llama, edited
):
    from editbench.core.store import ResultsStore
    from editbench.reports.collect import collect
    from editbench.reports.leaderboard import build_board

    spec = _spec(tmp_path, micro_llama, methods=("rec-a",), edits=8, checkpoints="4,8",
                 gen_eval=False)
    assert Runner(resolve(spec)).run().ok
    made_by = identity.code_identity()
    store = load_results(spec.out)
    assert store.runs()["versions"][0]["code"] == made_by["code"]
    assert {s["code"] for s in store.sessions()["numerics"]} == {made_by["code"]}
    assert Runner(resolve(spec)).run().ok  # the same code resumes (nothing left to do)

    edited("harness/running/runner.py")
    now = identity.code_identity()
    with pytest.raises(ValueError) as stopped:
        Runner(resolve(spec)).run()
    message = str(stopped.value)
    assert "\n" not in message and "--allow-code-change" in message and "--restart rec-a" in message
    assert f"code {made_by['code']}" in message and f"code {now['code']}" in message
    assert load_results(spec.out).runs()["versions"][0]["code"] == made_by["code"]  # untouched

    # allowed: resumed, stored, and marked on the board
    assert Runner(resolve(replace(spec, allow_code_change=True))).run().ok
    versions = load_results(spec.out).runs()["versions"][0]
    assert versions["code"] == now["code"] and made_by["code"] in versions["code_changes"]
    notes = build_board(collect([spec.out]), "pocket").notes
    assert [n.status for n in notes] == ["code-change"] and "--allow-code-change" in notes[0].text
    assert Runner(resolve(spec)).run().ok  # the code it now records resumes without a word

    # --restart of every method it holds: run again whole under this code, baseline too
    edited("core/probe.py")
    with ResultsStore(spec.out) as writer:
        before = len(writer.stored_methods(resolve(spec).run_id))
    assert before == 1
    assert Runner(resolve(replace(spec, restart=("rec-a",)))).run().ok
    store = load_results(spec.out)
    versions = store.runs()["versions"][0]
    assert versions["code"] == identity.package_code() and "code_changes" not in versions
    assert {s["code"] for s in store.sessions()["numerics"]} == {identity.package_code()}
    assert set(store.checkpoints()["n_edits"]) == {4, 8}


def test_key_statistics_computed_under_other_numerics_are_not_reused(monkeypatch):
    """Key statistics move with the thread count (summation order): the cache keeps each thread
    count's apart, so a run never mixes statistics of two threads with edits made on one."""
    import torch

    from editbench.methods.locate import stats

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    one = stats._stats_folder(Path("/c"), "model", "corpus", 10, stats.numerics_tag(cpu))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    two = stats._stats_folder(Path("/c"), "model", "corpus", 10, stats.numerics_tag(cpu))
    assert one != two and one.parent == two.parent
    assert stats.numerics_tag(torch.device("meta")) == "meta"
