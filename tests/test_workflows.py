"""The two GitHub Actions workflows, read like GitHub reads them, and CI's Chromium install.

GitHub only reports a broken workflow after a push, so these tests parse both files and check the
promises they keep: ``tests.yml`` runs ruff and README's test command on every push and pull
request; ``leaderboard.yml`` runs those tests first and builds nothing unless they pass, validates
every submission before the expensive steps, keys its cache on the code identity, submits the
pocket demo into the folder it publishes, and deploys last, from main only. Every step is named and
pinned, no secret is used, and every ``editbench`` command a workflow runs parses with today's
command line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from editbench.harness.cli.group import main
from editbench.reports.submission import DEFAULT_FOLDER

yaml = pytest.importorskip(
    "yaml", reason="PyYAML (installed with transformers) parses the workflows"
)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
TESTS, LEADERBOARD = WORKFLOWS / "tests.yml", WORKFLOWS / "leaderboard.yml"


def _load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.get("on", workflow.pop(True, None))  # YAML 1.1 reads `on` as true
    return workflow


@pytest.fixture(scope="module")
def tests_workflow() -> dict:
    return _load(TESTS)


@pytest.fixture(scope="module")
def leaderboard() -> dict:
    return _load(LEADERBOARD)


def _index(steps: list[dict], name: str) -> int:
    names = [s["name"] for s in steps]
    assert name in names, f"no step {name!r} among {names}"
    return names.index(name)


def _commands(steps: list[dict]) -> list[str]:
    return [line.strip() for step in steps for line in step.get("run", "").splitlines()
            if line.strip()]


def test_the_tests_run_ruff_then_readmes_command_on_every_push_and_pull_request(tests_workflow):
    triggers = tests_workflow["on"]
    assert "push" in triggers and "pull_request" in triggers and "workflow_call" in triggers
    for event in ("push", "pull_request"):  # no branch or path filter: every push and PR
        assert not (triggers[event] or {}), triggers[event]
    (job,) = tests_workflow["jobs"].values()
    steps = job["steps"]
    lint, test = _index(steps, "Lint with ruff"), _index(steps, "Run README's test command")
    assert lint < test
    assert "ruff check ." in _commands([steps[lint]])
    assert _commands([steps[test]]) == [".ci/run"]
    assert tests_workflow["permissions"] == {"contents": "read"}


def test_ci_run_executes_exactly_readmes_test_command():
    """``.ci/run`` takes the command from README.md: extracting it with the script's own line
    gives README's command, so the workflow's test step is README's command."""
    readme = (ROOT / "README.md").read_text().splitlines()
    marker = readme.index("<!-- test-command -->")
    assert readme[marker + 1].startswith("```")
    script = (ROOT / ".ci" / "run").read_text()
    (extract,) = [line for line in script.splitlines() if line.startswith("cmd=$(")]
    found = subprocess.run(["bash", "-c", f"{extract}; printf %s \"$cmd\""], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert found == readme[marker + 2] and "pytest" in found
    assert 'bash -c "$cmd"' in script


def test_the_leaderboard_builds_only_after_the_tests_pass(leaderboard):
    triggers = leaderboard["on"]
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    jobs = leaderboard["jobs"]
    assert jobs["tests"]["uses"] == "./.github/workflows/tests.yml"
    assert jobs["build"]["needs"] in ("tests", ["tests"])
    assert jobs["deploy"]["needs"] in ("build", ["build"])
    # deploy is last: no job waits for it, and it is the only one that writes anything
    assert not any("deploy" in ([j.get("needs")] if isinstance(j.get("needs"), str)
                                else j.get("needs") or []) for j in jobs.values())
    assert leaderboard["permissions"] == {"contents": "read"}
    assert jobs["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert "pages" not in jobs["build"].get("permissions", {})


def test_deploying_happens_from_main_only_never_from_a_pull_request(leaderboard):
    deploy = leaderboard["jobs"]["deploy"]
    condition = deploy["if"]
    assert "github.event_name != 'pull_request'" in condition
    assert "github.ref == 'refs/heads/main'" in condition
    assert deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


def test_submissions_are_validated_before_the_demo_and_the_site_are_built(leaderboard):
    steps = leaderboard["jobs"]["build"]["steps"]
    order = [_index(steps, name) for name in (
        "Install editbench with CPU torch", "Validate the submissions",
        "Compute the code identity", "Restore the pocket model",
        "Run a small pocket-world benchmark", "Submit the pocket demo", "Build the site",
        "Upload the site")]
    assert order == sorted(order)
    folder = str(DEFAULT_FOLDER)
    validate = shlex.split(steps[_index(steps, "Validate the submissions")]["run"])
    assert validate == ["editbench", "validate", folder]
    # the demo is one submission among the others: submitted into the folder the site is built from
    submit = shlex.split(steps[_index(steps, "Submit the pocket demo")]["run"])
    run = shlex.split(steps[_index(steps, "Run a small pocket-world benchmark")]["run"])
    assert submit[:3] == ["editbench", "submit", run[run.index("--out") + 1]]
    assert submit[submit.index("--into") + 1] == folder
    publish = shlex.split(steps[_index(steps, "Build the site")]["run"])
    upload = steps[_index(steps, "Upload the site")]
    assert publish[:3] == ["editbench", "publish", folder]
    assert publish[publish.index("--site") + 1] == upload["with"]["path"]
    assert upload["uses"].startswith("actions/upload-pages-artifact@")


def test_the_cache_is_keyed_on_the_code_identity(leaderboard):
    steps = leaderboard["jobs"]["build"]["steps"]
    identity = steps[_index(steps, "Compute the code identity")]
    assert "code_identity()" in identity["run"] and "$GITHUB_OUTPUT" in identity["run"]
    caches = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
    assert caches, "the workflow caches the pocket model"
    for cache in caches:
        key = cache["with"]["key"]
        assert f"steps.{identity['id']}.outputs.code" in key
        assert "restore-keys" not in cache["with"], "a partial match would restore other code's"
        assert _index(steps, "Compute the code identity") < steps.index(cache)


@pytest.mark.parametrize("path", [TESTS, LEADERBOARD], ids=lambda p: p.name)
def test_every_step_is_named_and_pinned_and_no_secret_is_used(path):
    workflow = _load(path)
    for job in workflow["jobs"].values():
        if "uses" in job:  # a called workflow: it is checked as its own file
            assert job["uses"].startswith("./.github/workflows/")
            continue
        assert job["runs-on"] == "ubuntu-latest"
        for step in job["steps"]:
            assert step.get("name"), step
            assert ("uses" in step) != ("run" in step), step["name"]
            if "uses" in step:
                assert re.fullmatch(
                    r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]
                ), step["uses"]
    assert not re.search(r"secrets\.(?!GITHUB_TOKEN)", path.read_text()), (
        "the workflows may use no secret but the Pages token"
    )


def test_every_editbench_command_they_run_parses_with_the_current_cli(leaderboard):
    lines = [line for line in _commands(leaderboard["jobs"]["build"]["steps"])
             if line.startswith("editbench ")]
    assert {shlex.split(line)[1] for line in lines} == {"validate", "run", "submit", "publish"}
    for line in lines:
        _, name, *args = shlex.split(line)
        command = main.commands[name]
        # raises click.UsageError on an unknown or malformed option
        command.make_context(name, args)


def test_ci_installs_chromium_before_the_test_command_and_survives_without_apt():
    script = (ROOT / ".ci" / "run").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
    install, tests = script.index("apt-get install"), script.index('bash -c "$cmd"')
    assert install < tests and "chromium" in script[install:tests]
    assert "|| echo" in script[install:tests]  # a failed install warns; the tests still run
