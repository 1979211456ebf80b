"""The HTML report in a real browser: headless Chromium driven by Playwright.

Skips, saying why, where Playwright or a Chromium executable is absent (``.ci/run`` installs
Debian's ``chromium``; Playwright drives it instead of downloading its own browser).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_report import EVIL, EVIL_ANSWER, build_store, wide_methods

from editbench.core.store import load_results
from editbench.reports.collect import collect
from editbench.reports.site import write_pages

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    wanted = os.environ.get("EDITBENCH_CHROMIUM")
    if wanted:
        return wanted
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (pip install -e '.[test]' brings it)",
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium executable on PATH (Debian: apt-get install chromium; "
                    ".ci/run installs it), or set EDITBENCH_CHROMIUM to one")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    # a metric beyond the protocol's headline, so the board has columns behind its toggle
    return build_store(tmp_path_factory.mktemp("results"), methods=wide_methods())


@pytest.fixture(scope="module")
def report(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_pages(collect([store]), out, site=False)
    return out


class Visit:
    """A page opened with every console message, error, request and dialog recorded."""

    def __init__(self, browser, url: str) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url, wait_until="load")

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        outside = [u for u in self.requests if not u.startswith(("file:", "data:"))]
        assert outside == [], f"network requests: {outside}"
        assert self.dialogs == []
        # injected markup did not run
        assert self.page.evaluate("typeof window.__pwned") == "undefined"


def _column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr:not([hidden])",
        f"rows => rows.map(r => r.cells[{index}].getAttribute('data-sort'))")


def _shown(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(
        selector, "els => els.filter(e => e.offsetParent !== null).map(e => e.textContent.trim())")


def test_the_board_opens_on_the_final_edit_count_with_the_headline_columns(browser, report):
    visit = Visit(browser, (report / "index.html").as_uri())
    page = visit.page
    visit.check_clean()
    table = "board-pocket"
    # default view: the final edit count only, the headline columns, the final count's chips
    assert set(_column(page, table, 1)) == {"40"}
    headers = _shown(page, f"#{table} thead th")
    assert any(h.startswith("efficacy") for h in headers)
    assert not any(h.startswith("portability") for h in headers)
    assert _shown(page, ".winners .winners-title") == ["At 40 edits"]
    chips = " ".join(_shown(page, ".winners .winner"))
    assert "efficacy" in chips and "s / edit" not in chips and "peak" not in chips
    assert page.is_visible(".controls .ladder")

    # the ladder moves along the edit counts, chips follow; "all" shows every count
    page.click(f".controls[data-table={table}] button[data-edits='10']")
    assert set(_column(page, table, 1)) == {"10"}
    assert _shown(page, ".winners .winners-title") == ["At 10 edits"]
    assert page.get_attribute(f".controls[data-table={table}] button[data-edits='10']",
                              "aria-pressed") == "true"
    page.click(f".controls[data-table={table}] button[data-edits='']")
    assert set(_column(page, table, 1)) == {"10", "40"}

    # the toggle shows the other metrics, and hides them again
    page.check(".controls .show-extra")
    assert any(h.startswith("portability") for h in _shown(page, f"#{table} thead th"))
    page.uncheck(".controls .show-extra")
    assert not any(h.startswith("portability") for h in _shown(page, f"#{table} thead th"))
    visit.check_clean()
    page.close()


def test_the_report_loads_clean_sorts_and_shows_its_plots(browser, report):
    visit = Visit(browser, (report / "index.html").as_uri())
    page = visit.page
    visit.check_clean()

    table = "board-pocket"
    page.click(f".controls[data-table={table}] button[data-edits='']")  # every edit count
    headers = page.eval_on_selector_all(
        f"#{table} thead th", "hs => hs.map(h => h.textContent.trim())"
    )
    efficacy = next(i for i, h in enumerate(headers) if h.startswith("efficacy"))
    before = _column(page, table, efficacy)
    page.click(f"#{table} thead th:nth-child({efficacy + 1}) button")
    after = [float(v) for v in _column(page, table, efficacy) if v]
    assert after == sorted(after, reverse=True) and after != [float(v) for v in before if v]
    assert page.get_attribute(
        f"#{table} thead th:nth-child({efficacy + 1})", "aria-sort"
    ) == "descending"
    page.click(f"#{table} thead th:nth-child({efficacy + 1}) button")
    assert [float(v) for v in _column(page, table, efficacy) if v] == sorted(after)

    # every table sorts, those written without buttons too (the lifelong summary)
    page.click("table.lifelong thead th:nth-child(1) button")
    names = page.eval_on_selector_all("table.lifelong tbody th", "c => c.map(x => x.textContent)")
    assert names == sorted(names, key=str.lower) and len(names) >= 3
    assert page.get_attribute("table.lifelong thead th:nth-child(1)", "aria-sort") == "ascending"

    plots = page.locator("figure.plot img")
    assert plots.count() == 4
    for i in range(plots.count()):
        image = plots.nth(i)
        image.scroll_into_view_if_needed()
        assert image.is_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), (
            image.get_attribute("src")
        )
        assert image.bounding_box()["width"] > 300
    visit.check_clean()
    page.close()


def test_without_scripts_the_page_is_plain_tables_with_every_count(browser, report):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto((report / "index.html").as_uri())
    rows = page.eval_on_selector_all(
        "#board-pocket tbody tr", "rs => rs.filter(r => r.offsetParent !== null).length")
    assert rows == len(page.query_selector_all("#board-pocket tbody tr")) > 3
    assert any(h.startswith("portability") for h in _shown(page, "#board-pocket thead th"))
    assert not page.is_visible(".controls")
    assert "Scripts are off" in page.inner_text("main")
    context.close()


def test_the_run_page_loads_clean_with_its_notes(browser, report):
    (run_page,) = (report / "runs").glob("*.html")
    visit = Visit(browser, run_page.as_uri())
    visit.check_clean()
    text = visit.page.inner_text("main")
    assert "diverged at 20 edits" in text and "failed with an error" in text
    assert "<script>window.__pwned = 3</script>" in text  # the error is shown as text
    visit.page.close()


def _answers(page, attribute: str) -> list[str]:
    return page.eval_on_selector_all(
        "#answers-table tbody tr", f"rows => rows.map(r => r.getAttribute('data-{attribute}'))")


def test_the_answer_browser_filters_by_method_edits_metric_and_verdict(browser, report, store):
    stored = load_results(store).samples()
    (run_page,) = (report / "runs").glob("*.html")
    visit = Visit(browser, run_page.as_uri())
    page = visit.page
    assert page.inner_text("#answers-count").startswith(f"{len(stored)} of {len(stored)} answers")
    assert len(_answers(page, "method")) == 200  # the first 200 of them shown

    page.select_option("select[data-filter=method]", label="strong")
    page.select_option("select[data-filter=edits]", "40")
    page.select_option("select[data-filter=metric]", label="efficacy (edit prompts)")
    assert set(_answers(page, "method")) == {"strong"} and set(_answers(page, "edits")) == {"40"}
    assert _answers(page, "kind") == ["edit"] * 40

    wanted = stored[(stored["method"] == "strong") & (stored["n_edits"] == 40)
                    & (stored["kind"] == "edit")]
    page.select_option("select[data-filter=verdict]", "gen-fail")
    assert set(_answers(page, "gen")) == {"fail"}
    assert len(_answers(page, "gen")) == (~wanted["generated_pass"]).sum() > 0
    page.select_option("select[data-filter=verdict]", "tf-pass")
    assert set(_answers(page, "tf")) == {"pass"}
    assert len(_answers(page, "tf")) == wanted["teacher_forced_pass"].sum() > 0
    page.select_option("select[data-filter=verdict]", "mirage")
    assert len(_answers(page, "gen")) == (
        wanted["teacher_forced_pass"] & ~wanted["generated_pass"]).sum()
    assert set(zip(_answers(page, "gen"), _answers(page, "tf"))) <= {("fail", "pass")}

    # a method whose label is markup, and an answer that tries to close the data block: text
    page.select_option("select[data-filter=verdict]", "")
    page.select_option("select[data-filter=method]", label=EVIL)
    page.select_option("select[data-filter=edits]", "10")
    first = page.locator("#answers-table tbody tr").first
    assert first.locator("td").nth(0).inner_text() == EVIL
    assert first.locator("td").nth(6).inner_text() == EVIL_ANSWER
    assert page.locator("#answers-table b").count() == 0
    visit.check_clean()
    page.close()
