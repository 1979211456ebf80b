"""The leaderboard page's markup without a browser, and the plots' styles.

The page must open on the final edit count with the protocol's headline columns (the script does
the narrowing, so the markup must say what is headline and what is extra), keep every count and
column in plain tables for a reader without scripts, and give winner chips only to quality
columns. ``test_report_browser.py`` checks the same page in Chromium where one is installed.
"""

from __future__ import annotations

from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report import build_store, wide_methods

from editbench.reports.collect import collect
from editbench.reports.derived import MIRAGE_GAPS
from editbench.reports.leaderboard import build_boards
from editbench.reports.plots import COLOURS, family, method_order, metrics_figure, palette
from editbench.reports.site import write_pages


class Elements(HTMLParser):
    """Every start tag with its attributes and the text up to the next tag of its kind."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.open: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        text: list[str] = []
        self.found.append((tag, dict(attrs), text))
        self.open.append(text)
        self.open = self.open[-40:]

    def handle_data(self, data):
        for text in self.open:
            text.append(data)

    def handle_endtag(self, tag):
        if self.open:
            self.open.pop()

    def select(self, tag: str, **wanted: str) -> list[tuple[dict, str]]:
        out = []
        for name, attrs, text in self.found:
            if name != tag:
                continue
            if all(v in (attrs.get("class") or "").split() if k == "class_"
                   else attrs.get(k.replace("_", "-")) == v for k, v in wanted.items()):
                out.append((attrs, "".join(text)))
        return out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Elements:
    store = build_store(tmp_path_factory.mktemp("results"), methods=wide_methods())
    out = tmp_path_factory.mktemp("report")
    write_pages(collect([store]), out, site=False)
    parsed = Elements()
    parsed.feed((Path(out) / "index.html").read_text("utf-8"))
    return parsed


def _classes(attrs: dict) -> list[str]:
    return (attrs.get("class") or "").split()


def test_headline_columns_lead_and_the_rest_are_marked_extra(page):
    headers = {attrs["data-key"]: attrs for attrs, _ in page.select("th")
               if "data-key" in attrs}
    headline = {"efficacy_acc", "generalization_acc", "specificity_agree", "seconds_per_edit",
                "peak_memory_bytes"}
    assert headline <= set(headers) and "portability_acc" in headers
    for key, attrs in headers.items():
        assert ("extra" in _classes(attrs)) == (key not in headline), key
    cells = page.select("td")
    extra_cells = [a for a, _ in cells if "extra" in _classes(a)]
    rows = page.select("tr")
    board_rows = [a for a, _ in rows if "data-edits" in a]
    assert len(extra_cells) == len(board_rows)  # one extra column, a cell in each row


def test_without_scripts_every_count_is_in_the_table_and_the_controls_wait(page):
    rows = [a for a, _ in page.select("tr") if "data-edits" in a]
    assert {a["data-edits"] for a in rows} == {"10", "40"}
    assert not any("hidden" in a for a in rows)  # the script hides; the markup shows all
    ((controls, _),) = page.select("div", class_="controls")
    assert "hidden" in controls  # controls appear only where the script runs
    pressed = [a["data-edits"] for a, _ in page.select("button") if a.get("aria-pressed") == "true"]
    assert pressed == ["40"]  # the ladder starts at the final count
    assert any("every edit count" in text for _, text in page.select("noscript"))
    assert page.select("input", class_="show-extra")


def test_winner_chips_are_for_quality_columns_only_one_line_per_count(page):
    lines = page.select("div", class_="winners")
    assert [a["data-edits"] for a, _ in lines] == ["10", "40"]
    assert [("hidden" in a) for a, _ in lines] == [True, False]  # the final count's is shown
    chips = " ".join(text for _, text in page.select("span", class_="winner"))
    assert "efficacy" in chips
    assert "s / edit" not in chips and "peak MiB" not in chips


def test_every_data_table_has_a_header_row_for_the_sort_script(page):
    tables = page.select("table")
    assert len(tables) >= 3
    heads = page.select("thead")
    assert len(heads) == len(tables)


def test_twenty_methods_never_share_colour_and_marker():
    names = ["rome", "memit", "alphaedit", "pmet", "emmet", "mend", "malmen", "rledit",
             "ultraedit", "ft-l", "ft-m", "locft-bf", "lora", "grace", "wise", "melo",
             "retrieval", "ike", "mystery-a", "mystery-b"]
    styles = palette(names)
    assert len({s.color for s in styles.values()}) == 20 == len(COLOURS)
    assert len({(s.color, s.marker) for s in styles.values()}) == 20
    assert family("mystery-a") == "other" and family("memit (gpt2)") == "locate-then-edit"
    assert family("wise@easyedit") == "memory"
    # one order everywhere: the same labels in another order give the same styles
    again = palette(list(reversed(names)))
    assert list(again) == list(styles) == method_order(names)
    assert all(again[n] == styles[n] for n in names)
    # a family shares its marker; families differ
    assert styles["memit"].marker == styles["rome"].marker != styles["mend"].marker


def test_every_registered_method_is_drawn_in_its_family():
    """A new method gets its family's marker and dash, not the "other" one (LyapLock, HiEdit,
    MEMOIR and lora-ft were drawn as "other" until this test)."""
    from editbench.methods import METHODS

    assert [name for name, _ in METHODS.items() if family(name) == "other"] == []


def test_mirage_gap_panels_share_one_y_range(tmp_path):
    rates = {"efficacy_acc": 0.9, "efficacy_gen_em": 0.2, "generalization_acc": 0.6,
             "generalization_gen_em": 0.55, "specificity_agree": 0.9}
    store = build_store(tmp_path, methods={"memit": rates, "mend": {**rates,
                                                                     "efficacy_gen_em": 0.85}})
    (board,) = build_boards(collect([store]))
    fig = metrics_figure(board, palette(board.labels()), {d.name for d in MIRAGE_GAPS})
    limits = {ax.get_title(): ax.get_ylim() for ax in fig.axes if ax.get_title()}
    assert len(limits) == 2 and len(set(limits.values())) == 1
    low, high = next(iter(limits.values()))
    assert low <= 0 < 0.5 < high  # holds an efficacy gap near 0.7 and one near 0
    whole = metrics_figure(board, palette(board.labels()))
    shares = {ax.get_title(): ax.get_ylim() for ax in whole.axes if ax.get_title()}
    assert shares["efficacy (acc)"] == pytest.approx((-0.02, 1.02))
    assert "efficacy mirage gap" not in shares  # drawn once, in its own figure


def test_a_task_without_the_headline_metrics_leads_with_its_first_three(tmp_path):
    rates = {"efficacy_acc": 0.5, "alpha_score": 0.9, "beta_score": 0.5, "gamma_score": 0.4,
             "delta_score": 0.3}
    store = build_store(tmp_path, methods={"memit": rates, "mend": rates})
    (board,) = build_boards(collect([store]))
    keys = board.headline_keys()
    assert keys[0] == "efficacy_acc" and "delta_score" not in keys
    # the same board without any of the protocol's headline metrics
    other = replace(board, columns=[c for c in board.columns if c.key != "efficacy_acc"])
    quality = [k for k in other.headline_keys() if k not in ("seconds_per_edit",
                                                                "peak_memory_bytes")]
    assert len(quality) == 3 and set(quality) < set(rates) - {"efficacy_acc"}
