"""``editbench compare``: B − A per checkpoint with intervals, printed and as a page."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from user_stores import fading, invoke, write_run

from editbench.reports.stats import bootstrap_difference

EVIL = "<script>window.__pwned = 1</script>"


def steady(label: str, n: int, metric: str) -> float:
    return {"low": 0.2, "high": 0.9}.get(label, 0.5)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("compare") / "results",
                     {"low": steady, "high": steady, EVIL: fading}, ladder=(20, 60),
                     metrics=("efficacy_acc", "generalization_acc", "specificity_agree",
                              "efficacy_gen_em"))


def rows(output: str) -> list[list[str]]:
    """The table's rows (after its rule line), split into cells."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-----")) + 1
    return [line.split() for line in lines[start:] if line[:1] == " " or line[:1].isdigit()]


def test_two_methods_of_one_store_differ_clearly_and_are_paired(store):
    result = invoke("compare", store, "--methods", "low,high")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("A: low (") and "\nB: high (" in result.output
    table = rows(result.output)
    # every checkpoint and the headline metrics both families stored
    assert {(r[0], r[1]) for r in table} == {(n, m) for n in ("20", "60") for m in
                                             ("efficacy", "general.", "specif.", "eff.(gen)")}
    for r in table:
        # rates 0.9 against 0.2: B − A near +0.7, its interval clear of zero, paired by edit
        assert r[4].endswith("*") and 0.3 < float(r[4].rstrip("*")) < 1.0 and r[-1] == "yes"
    swapped = rows(invoke("compare", store, "--methods", "high,low").output)
    assert all(float(s[4].rstrip("*").replace("−", "-")) < 0 for s in swapped)


def test_a_store_against_its_copy_shows_no_difference(store, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    result = invoke("compare", store, copy, "--methods", "high")
    assert result.exit_code == 0, result.output
    for r in rows(result.output):
        assert r[4] == "+0.000" and r[5:8] == ["+0.000", "…", "+0.000"] and r[-1] == "yes"


def test_the_page_escapes_the_data_and_is_never_written_over_a_users_file(store, tmp_path):
    page = tmp_path / "compare.html"
    result = invoke("compare", store, "--methods", f"low,{EVIL}", "--html", page)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text and "<table>" in text
    # its own page is replaced; a file of the user's is not
    assert invoke("compare", store, "--methods", "low,high", "--html", page).exit_code == 0
    mine = tmp_path / "notes.html"
    mine.write_text("<!DOCTYPE html><p>mine</p>")
    refused = invoke("compare", store, "--methods", "low,high", "--html", mine)
    assert refused.exit_code != 0 and "editbench did not write" in refused.output
    assert mine.read_text() == "<!DOCTYPE html><p>mine</p>"


def test_what_to_compare_is_asked_for_in_one_line(store, tmp_path):
    for args, words in (((store,), "--methods A,B"),
                        ((store, "--methods", "low,nonesuch"), "no scores of the method"),
                        ((store, store), "--methods: name the method")):
        result = invoke("compare", *args)
        assert result.exit_code != 0 and words in result.output.strip().splitlines()[-1]


def test_a_paired_difference_cancels_what_the_edits_share():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    exact = bootstrap_difference(a, a + 0.1, np.random.default_rng(1), paired=True)
    assert abs(exact.mean - 0.1) < 1e-9 and abs(exact.low - 0.1) < 1e-9 \
        and abs(exact.high - 0.1) < 1e-9
    apart = bootstrap_difference(a, a + 0.1, np.random.default_rng(1), paired=False)
    assert apart.low < 0.1 - 0.02 and apart.high > 0.1 + 0.02  # the edits' spread stays in
    with pytest.raises(ValueError, match="as many values"):
        bootstrap_difference(a, a[:5], np.random.default_rng(1), paired=True)
