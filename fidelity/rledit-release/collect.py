"""Collect both sides into one table (markdown) and apply the decision rule fixed in README.

Release: ``release/METHOD-sSEED/result.json`` (run_release.py: ES/GS/LS from the last
``wandb.log`` of ``sequential_valid``, editor/base.py:287-312, times 100). editbench:
``editbench/seedSEED/results.sqlite``, checkpoint 100, the per-edit rows of efficacy_acc,
generalization_acc and specificity_acc averaged over the 100 edits (the same quantities on the same
pairs: README "What is compared"); timings from the store's phase timings.

    .venv/bin/python fidelity/rledit-release/collect.py WORK > WORK/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

from editbench.core.store import load_results

PAIRS = (("rledit", "rledit@release"), ("malmen", "malmen@rledit-release"),
         ("mend", "mend@rledit-release"))
SEEDS = (0, 1, 2)
METRICS = (("ES", "efficacy_acc"), ("GS", "generalization_acc"), ("LS", "specificity_acc"))
MARGIN = 2.0  # points


def editbench_side(work: Path, seed: int) -> dict[str, dict]:
    store = load_results(work / "editbench" / f"seed{seed}")
    rows = store.per_edit()
    rows = rows[rows.n_edits == 100]
    times = store.timings()
    out = {}
    for _, label in PAIRS:
        mine, t = rows[rows.method == label], times[times.method == label]
        assert len(mine) == 100, (label, seed, len(mine))
        out[label] = {name: 100 * mine[col].mean() for name, col in METRICS}
        out[label]["train_s"] = t[t.phase == "prepare"].seconds.sum()
        out[label]["edit_s"] = t[t.phase == "edit"].seconds.sum()
        out[label]["eval_s"] = t[t.phase == "eval"].seconds.sum()
        out[label]["edit_eval_s"] = out[label]["edit_s"] + out[label]["eval_s"]
    return out


def main() -> None:
    work = Path(sys.argv[1])
    eb = {seed: editbench_side(work, seed) for seed in SEEDS}
    rel = {(m, s): json.loads((work / "release" / f"{m}-s{s}" / "result.json").read_text())
           for m, _ in PAIRS for s in SEEDS}
    for r in rel.values():  # the edit steps inside sequential_valid; the rest of it is scoring
        r["eval_s"] = r["edit_eval_s"] - r["edit_s"]
    lines = ["| method | side | seed | ES | GS | LS | train s | edit s | eval s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = ["| method | metric | release mean | editbench mean | difference | release spread "
                "| allowed | within |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary = {}
    for name, label in PAIRS:
        sides = {"release": [rel[(name, s)] for s in SEEDS],
                 "editbench": [eb[s][label] for s in SEEDS]}
        for side, results in sides.items():
            for seed, r in zip(SEEDS, results):
                lines.append(f"| {label if side == 'editbench' else name} | {side} | {seed} | "
                             f"{r['ES']:.1f} | {r['GS']:.1f} | {r['LS']:.1f} | "
                             f"{r['train_s']:.2f} | {r['edit_s']:.3f} | {r['eval_s']:.3f} |")
            lines.append(f"| {label if side == 'editbench' else name} | {side} | **mean** | "
                         + " | ".join(f"**{mean(r[k] for r in results):.{d}f}**"
                                      for k, d in (("ES", 1), ("GS", 1), ("LS", 1), ("train_s", 2),
                                                   ("edit_s", 3), ("eval_s", 3))) + " |")
        ok_all = True
        for metric, _ in METRICS:
            r = [x[metric] for x in sides["release"]]
            e = [x[metric] for x in sides["editbench"]]
            diff, spread = mean(e) - mean(r), max(r) - min(r)
            allowed = max(MARGIN, spread)
            ok = abs(diff) <= allowed
            ok_all &= ok
            verdicts.append(f"| {name} | {metric} | {mean(r):.1f} | {mean(e):.1f} | {diff:+.1f} | "
                            f"{spread:.1f} | {allowed:.1f} | {'yes' if ok else 'NO'} |")
        summary[name] = "agrees" if ok_all else "differs"
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))
    print()
    print("| method | train: release / editbench | edit | eval |")
    print("| --- | --- | --- | --- |")
    for name, label in PAIRS:  # speed: ratios of the three-seed means, release over editbench
        ratio = {k: mean(rel[(name, s)][k] for s in SEEDS) / mean(eb[s][label][k] for s in SEEDS)
                 for k in ("train_s", "edit_s", "eval_s")}
        cells = " | ".join(f"{ratio[k]:.2f}x" for k in ("train_s", "edit_s", "eval_s"))
        print(f"| {name} | {cells} |")
    print()
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    (work / "table.json").write_text(json.dumps(
        {"release": {f"{m}-s{s}": v for (m, s), v in rel.items()},
         "editbench": {f"{label}-s{s}": eb[s][label] for s in SEEDS for _, label in PAIRS},
         "verdicts": summary}, indent=1))


if __name__ == "__main__":
    main()
