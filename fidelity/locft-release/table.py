"""The suite's tables and verdicts from the result files (the rule was written before any result
was seen; README "Decision rule").

Release: ``release/VARIANT-sS/release.json`` (run_release.py: times, the release's own exact
match) and ``score.json`` (score.py: ES/GS/LS). editbench: ``editbench/VARIANT-sS/editbench.json``
(run_editbench.sh: ES/GS/LS from its store at checkpoint 100, times, and the release's exact
match on its saved model).

    python fidelity/locft-release/table.py RESULTS_DIR > RESULTS_DIR/results.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("ES", "GS", "LS")
TOLERANCE = 2.0  # points
SEEDS = (0, 1, 2)
#: (release variant, editbench variant, what differs)
PAIRS = (
    ("b100", "b100", "one call, mini-batches of 100 (the release's yaml), lr 5e-4"),
    ("b10", "b10", "one call, mini-batches of 10, lr 5e-4"),
    ("b10-lr5e-3", "b10-lr5e-3", "one call, mini-batches of 10, lr 5e-3"),
    ("b100-lr5e-3", "b100-lr5e-3", "one call, mini-batches of 100, lr 5e-3"),
    ("b100", "turns10", "editbench's lifelong turns of 10 (25 steps, fresh Adam each) against "
                        "the release's one call; same settings, lr 5e-4"),
    ("b100-lr5e-3", "turns10-lr5e-3", "the same at lr 5e-3"),
    ("b10", "turns10", "editbench's lifelong turns of 10 against the release's one call in "
                       "mini-batches of 10: both 250 steps on mini-batches of 10, lr 5e-4"),
    ("b10-lr5e-3", "turns10-lr5e-3", "the same at lr 5e-3"),
)


def verdict(release: list[float], editbench: list[float]) -> dict:
    """The decision rule: editbench's mean within 2 points of the release's mean, or within the
    release's seed spread (max - min) where that is wider."""
    r_mean = sum(release) / len(release)
    e_mean = sum(editbench) / len(editbench)
    spread = max(release) - min(release)
    allowed = max(TOLERANCE, spread)
    diff = e_mean - r_mean
    return {"release": r_mean, "editbench": e_mean, "diff": diff, "spread": spread,
            "allowed": allowed, "agree": abs(diff) <= allowed}


def load(folder: Path, side: str, variant: str, seed: int) -> dict | None:
    base = folder / side / f"{variant}-s{seed}"
    if side == "release":
        if not (base / "score.json").exists():
            return None
        run = json.loads((base / "release.json").read_text())
        return {**json.loads((base / "score.json").read_text()),
                "em_es": 100 * run["release_em_es"], "em_gs": 100 * run["release_em_gs"],
                "edit_s": run["edit_seconds"], "eval_s": run["eval_seconds"],
                "release_eval_s": run["eval_seconds"]}
    if not (base / "editbench.json").exists():
        return None
    run = json.loads((base / "editbench.json").read_text())
    return {**run, "em_es": run["release_em_es"], "em_gs": run["release_em_gs"],
            "edit_s": run["edit_seconds"], "eval_s": run["eval_seconds"],
            "release_eval_s": run["release_eval_seconds"]}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    folder = Path(sys.argv[1])
    out = ["Scores in %, 100 pocket edits, checkpoint 100 / the saved model. ES, GS, LS: "
           "teacher-forced token accuracy (editbench's efficacy_acc, generalization_acc, "
           "specificity_agree; score.py on the release's model). EM ES / EM GS: the release's "
           "eval_edit_metric.py (greedy, <= 32 tokens, stop at '.', newline, EOS; exact match) on "
           "each side's model. Times in seconds on a loaded 2-core machine (indicative only): "
           "edit = the release's execute_ft / editbench's edit phase; eval = editbench's eval "
           "phase (teacher-forced and generated metrics) / the release's evaluation; rel-eval = "
           "the release's evaluation of that side's model.", ""]
    summary = {}
    for r_var, e_var, what in PAIRS:
        rel = [load(folder, "release", r_var, s) for s in SEEDS]
        eb = [load(folder, "editbench", e_var, s) for s in SEEDS]
        if any(x is None for x in rel + eb):
            continue
        out += [f"### release `{r_var}` / editbench `{e_var}`: {what}", "",
                "| side | seed | ES | GS | LS | LS (acc) | EM ES | EM GS | edit s | eval s "
                "| rel-eval s |", "|" + " --- |" * 11]
        for side, rows in (("release", rel), ("editbench", eb)):
            for seed, row in zip(SEEDS, rows):
                out.append(f"| {side} | {seed} | {row['ES']:.1f} | {row['GS']:.1f} | "
                           f"{row['LS']:.1f} | {row['LS_acc']:.1f} | {row['em_es']:.0f} | "
                           f"{row['em_gs']:.0f} | {row['edit_s']:.1f} | {row['eval_s']:.1f} | "
                           f"{row['release_eval_s']:.1f} |")
            out.append(f"| {side} | **mean** | " + " | ".join(
                f"**{mean([r[k] for r in rows]):.1f}**"
                for k in ("ES", "GS", "LS", "LS_acc", "em_es", "em_gs", "edit_s", "eval_s",
                          "release_eval_s")) + " |")
        out += ["", "| metric | release mean | editbench mean | difference | release spread | "
                "allowed | within |", "| --- | --- | --- | --- | --- | --- | --- |"]
        verdicts = {}
        for metric in METRICS:
            v = verdict([r[metric] for r in rel], [e[metric] for e in eb])
            verdicts[metric] = v
            out.append(f"| {metric} | {v['release']:.1f} | {v['editbench']:.1f} | "
                       f"{v['diff']:+.1f} | {v['spread']:.1f} | {v['allowed']:.1f} | "
                       f"{'yes' if v['agree'] else 'NO'} |")
        agree = all(v["agree"] for v in verdicts.values())
        out += ["", f"Verdict: **{'agrees' if agree else 'differs'}**", ""]
        summary[f"{r_var}/{e_var}"] = {"agree": agree, **{m: verdicts[m] for m in METRICS}}
    print("\n".join(out))
    (folder / "verdicts.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
