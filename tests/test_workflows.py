"""The GitHub Actions workflow that publishes the leaderboard, and CI's Chromium install.

GitHub only reports a broken workflow after a push, so this test reads it like GitHub does: valid
YAML, the Pages permissions and jobs, every step named and pinned, no secrets, and every
``editbench`` command it runs accepted by today's command line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from editbench.harness.cli.group import main

yaml = pytest.importorskip(
    "yaml", reason="PyYAML (installed with transformers) parses the workflow"
)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "leaderboard.yml"
BUILD_STEPS = ["Check out", "Set up Python", "Install editbench with CPU torch",
               "Restore the pocket model", "Run a small pocket-world benchmark", "Build the site",
               "Upload the site"]


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_it_runs_on_pushes_to_main_with_only_the_pages_permissions(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    text = WORKFLOW.read_text()
    assert not re.search(r"secrets\.(?!GITHUB_TOKEN)", text), (
        "the workflow may use no secret but the Pages token"
    )


def test_the_jobs_build_then_deploy_with_named_pinned_steps(workflow):
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert [s["name"] for s in build["steps"]] == BUILD_STEPS
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    for job in (build, deploy):
        assert job["runs-on"] == "ubuntu-latest"
        for step in job["steps"]:
            assert step.get("name"), step
            assert ("uses" in step) != ("run" in step), step["name"]
            if "uses" in step:
                assert re.fullmatch(
                    r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]
                ), step["uses"]
    upload = next(s for s in build["steps"] if s["name"] == "Upload the site")
    publish = next(s for s in build["steps"] if s["name"] == "Build the site")
    assert upload["uses"].startswith("actions/upload-pages-artifact@")
    assert shlex.split(publish["run"])[-1] == upload["with"]["path"]


def test_every_editbench_command_it_runs_parses_with_the_current_cli(workflow):
    lines = [line.strip() for step in workflow["jobs"]["build"]["steps"]
             for line in step.get("run", "").splitlines()
             if line.strip().startswith("editbench ")]
    assert {shlex.split(line)[1] for line in lines} == {"run", "publish"}
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
