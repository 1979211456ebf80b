"""Collect both sides of one variant into a table (markdown) and apply the decision rule fixed in
README before any run.

Release: ``VARIANT/release/sSEED/result.json`` (run_release.py: ES/GS/LS from the ``wandb.log``
of ``sequential_valid``, editor/base.py:216-229, times 100; edit and evaluation seconds apart).
editbench: ``VARIANT/editbench/sSEED`` (a results store with one method), the last checkpoint's
per-edit rows of efficacy_acc, generalization_acc and specificity_acc averaged over the edits (the
same quantities on the same pairs: README "What is compared"); seconds from the store's phase
timings (``edit``; ``eval`` without the unedited model's scoring, which the release does not do).

    .venv/bin/python fidelity/ultraedit-release/collect.py WORK/VARIANT [NAME] > table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

SEEDS = (0, 1, 2)
METRICS = (("ES", "efficacy_acc"), ("GS", "generalization_acc"), ("LS", "specificity_acc"))
MARGIN = 2.0  # points


def agree(release: list[float], editbench: list[float]) -> tuple[float, float, float, bool]:
    """The decision rule: |mean difference| <= max(2 points, the release's max - min)."""
    diff, spread = mean(editbench) - mean(release), max(release) - min(release)
    allowed = max(MARGIN, spread)
    return diff, spread, allowed, abs(diff) <= allowed


def editbench_side(folder: Path) -> dict:
    from editbench.core.store import load_results

    store = load_results(folder)
    rows = store.per_edit()
    rows = rows[rows.n_edits == rows.n_edits.max()]
    (label,) = set(rows.method)
    times = store.timings()
    times = times[times.method == label]
    out = {name: 100 * rows[col].mean() for name, col in METRICS}
    out["per_record"] = {row.uid: {name: 100 * getattr(row, col) for name, col in METRICS}
                         for row in rows.itertuples()}
    out.update(label=label, n=len(rows),
               edit_s=float(times[times.phase == "edit"].seconds.sum()),
               eval_s=float(times[times.phase == "eval"].seconds.sum()),
               phases={p: float(s) for p, s in times.groupby("phase").seconds.sum().items()})
    return out


def main() -> None:
    work = Path(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else work.name
    rel = [json.loads((work / "release" / f"s{s}" / "result.json").read_text()) for s in SEEDS]
    eb = [editbench_side(work / "editbench" / f"s{s}") for s in SEEDS]
    lines = [f"### {name}", "", "| side | seed | ES | GS | LS | edit s | eval s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for side, results in (("release", rel), (f"editbench `{eb[0]['label']}`", eb)):
        for seed, r in zip(SEEDS, results):
            lines.append(f"| {side} | {seed} | {r['ES']:.2f} | {r['GS']:.2f} | {r['LS']:.2f} | "
                         f"{r['edit_s']:.1f} | {r['eval_s']:.1f} |")
        lines.append(f"| {side} | **mean** | " + " | ".join(
            f"**{mean(r[k] for r in results):.2f}**"
            for k in ("ES", "GS", "LS", "edit_s", "eval_s")) + " |")
    same, worst, total = 0, 0.0, 0
    for r, e in zip(rel, eb):
        theirs = json.loads((work / "release" / f"s{r['seed']}" / "per_record.json").read_text())
        assert set(theirs) == set(e["per_record"]), "the sides scored other records"
        for uid, scores in theirs.items():
            for metric, _ in METRICS:
                gap = abs(scores[metric] - e["per_record"][uid][metric])
                total += 1
                same += gap < 1e-4
                worst = max(worst, gap)
    lines += ["", f"per-edit scores (3 seeds x 300 edits x ES, GS, LS): {same} of {total} "
              f"identical (within 1e-4 points); largest difference {worst:.2f} points"]
    lines += ["", "| metric | release mean | editbench mean | difference | release spread | "
              "allowed | within |", "| --- | --- | --- | --- | --- | --- | --- |"]
    verdict = True
    for metric, _ in METRICS:
        r, e = [x[metric] for x in rel], [x[metric] for x in eb]
        diff, spread, allowed, ok = agree(r, e)
        verdict &= ok
        lines.append(f"| {metric} | {mean(r):.2f} | {mean(e):.2f} | {diff:+.2f} | {spread:.2f} | "
                     f"{allowed:.2f} | {'yes' if ok else 'NO'} |")
    lines += ["", f"verdict ({name}): {'agrees' if verdict else 'differs'}"]
    print("\n".join(lines))
    (work / "table.json").write_text(json.dumps(
        {"variant": name, "release": rel,
         "editbench": [{k: v for k, v in e.items() if k != "per_record"} for e in eb],
         "per_edit_identical": [same, total], "per_edit_max_diff": worst,
         "verdict": "agrees" if verdict else "differs"}, indent=1, default=str))


if __name__ == "__main__":
    main()
