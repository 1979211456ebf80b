"""The side-by-side tables: EasyEdit's end-of-stream scores (run_easyedit.py's JSON files) against
editbench's at checkpoint 100 (its results.sqlite), per seed, with the verdict of README.md's rule.

    python table.py RESULTS_DIR [--edits N] > results.md

``--edits N`` (default 100): editbench's scores at checkpoint N (a 1,000-edit run's folder).
Where a release file times editing and its own scoring apart (``edit_only_s``), its time column
shows editing + all scoring (the release's inside ``edit()`` and the end-of-stream pass).

RESULTS_DIR holds ee-METHOD-sSEED.json and eb-METHOD/results.sqlite (run_all.sh writes them).
Token accuracies are shown in % (0-100).
"""

import json
import sqlite3
import sys
from pathlib import Path

METRICS = {"ES": "efficacy_acc", "GS": "generalization_acc", "LS": "specificity_agree"}
SEEDS = (0, 1, 2)
TOLERANCE = 2.0  # points
EDITS = 100  # the checkpoint compared (--edits)


def editbench_scores(store: Path, method: str) -> dict[int, dict]:
    con = sqlite3.connect(store)
    out = {}
    for run_id, seed in con.execute("SELECT run_id, seed FROM runs"):
        row = {}
        for short, metric in METRICS.items():
            value = con.execute(
                "SELECT avg(value) FROM scores WHERE run_id=? AND method=? AND n_edits=? "
                "AND metric=?", (run_id, method, EDITS, metric)).fetchone()[0]
            row[short] = None if value is None else 100 * value
        timing = con.execute(
            "SELECT edit_seconds, eval_seconds FROM checkpoints WHERE run_id=? AND method=? "
            "AND n_edits=?", (run_id, method, EDITS)).fetchone()
        if timing is not None and row["ES"] is not None:
            row["edit_s"], row["eval_s"] = timing
            out[seed] = row
    return out


def easyedit_scores(folder: Path, method: str, suffix: str = "", key: str = "end_of_stream",
                    prefix: str = "ee", seeds=SEEDS) -> dict[int, dict]:
    out = {}
    for seed in seeds:
        path = folder / f"{prefix}-{method}{suffix}-s{seed}.json"
        if path.exists():
            data = json.loads(path.read_text())
            if not data.get(key):
                continue
            row = {k: 100 * v for k, v in data[key].items()}
            row["immediate"] = {k: 100 * v for k, v in data["release_immediate"].items()}
            row["edit_s"], row["eval_s"] = data["edit_and_immediate_eval_s"], data["end_eval_s"]
            if "edit_only_s" in data:  # editing and the release's own scoring timed apart
                row["edit_s"] = data["edit_only_s"]
                row["eval_s"] = data["immediate_eval_s"] + data["end_eval_s"]
            out[seed] = row
    return out


def fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(method: str, label: str, ee: dict, eb: dict, seeds=SEEDS) -> str:
    lines = [f"### {label}", "",
             "| seed | EE ES | EE GS | EE LS | eb ES | eb GS | eb LS | EE edit+eval s | "
             "eb edit s + eval s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for seed in seeds:
        e, b = ee.get(seed), eb.get(seed)
        cells = [fmt(e[k]) if e else "-" for k in METRICS] + \
                [fmt(b[k]) if b else "-" for k in METRICS]
        t_e = f"{e['edit_s']:.0f} + {e['eval_s']:.0f}" if e else "-"
        t_b = f"{b['edit_s']:.0f} + {b['eval_s']:.0f}" if b else "-"
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {t_e} | {t_b} |")
    common = sorted(set(ee) & set(eb))
    if not common:
        return "\n".join(lines + ["", "no seed ran on both sides", ""])
    lines += ["", "| metric | EE mean | eb mean | eb - EE | EE seed range | tolerance | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for k in METRICS:
        e_vals = [ee[s][k] for s in common]
        b_vals = [eb[s][k] for s in common]
        e_mean, b_mean = sum(e_vals) / len(e_vals), sum(b_vals) / len(b_vals)
        spread = max(e_vals) - min(e_vals)
        tol = max(TOLERANCE, spread)
        ok = abs(b_mean - e_mean) <= tol
        verdicts.append(ok)
        lines.append(f"| {k} | {e_mean:.1f} | {b_mean:.1f} | {b_mean - e_mean:+.1f} | "
                     f"{spread:.1f} | {tol:.1f} | {'agree' if ok else 'DIFFER'} |")
    lines += ["", f"Seeds on both sides: {common}. Verdict: "
              + ("**agrees** on ES, GS and LS" if all(verdicts) else "**differs**"), ""]
    imm = [ee[s]["immediate"] for s in common]
    lines += ["EasyEdit's own per-edit numbers (each edit scored right after it is applied, "
              "editor.py:403-406), mean over seeds: "
              + ", ".join(f"{k} {sum(i[k] for i in imm) / len(imm):.1f}" for k in METRICS), ""]
    return "\n".join(lines)


def wise_preset_tables(folder: Path) -> list[str]:
    """editbench's ``wise@easyedit`` (the release's computation, WISE-PRESET.md) against the
    release: scored by ``editbench run`` (eb-wise@easyedit/results.sqlite), and, from
    editbench_wise_grouped.py, scored with the release's evaluation calls (``grouped``) and by
    editbench's own scorer on that same edited model (``editbench``)."""
    ee, parts = easyedit_scores(folder, "wise"), []
    if not ee:
        return parts
    store, summary = (folder / "eb-wise@easyedit" / "results.sqlite",
                      folder / "editbench-checkpoint-100.json")
    preset = {}
    if store.exists():
        preset = editbench_scores(store, "wise@easyedit")
    elif summary.exists():  # results/ keeps the store's means, not the store
        preset = {int(seed): row for seed, row
                  in json.loads(summary.read_text()).get("wise@easyedit", {}).items()}
    if preset:
        parts.append(table("wise", "WISE: editbench wise@easyedit (editbench run, its own "
                           "scoring)", ee, preset))
        own_row = easyedit_scores(folder, "wise", suffix="-loc-own", prefix="diag")
        if len(own_row) == len(SEEDS):  # the one difference the preset keeps, taken out
            parts.append(table("wise", "WISE: EasyEdit with editbench's unrelated row "
                               "(--loc-own: a train record's own prompt and answer, no scored "
                               "neighbour) against editbench wise@easyedit (editbench run)",
                               own_row, preset))
    grouped = folder / "eb-wise-grouped.json"
    if grouped.exists():
        data = json.loads(grouped.read_text())
        for key, label in (("grouped", "scored as the release's evaluation calls them: edit "
                            "prompt and each paraphrase alone, an edit's neighbours in one "
                            "left-padded call"),
                           ("editbench", "editbench's own scoring of the same edited model")):
            eb = {int(seed): {**{m: 100 * v[key][m] for m in METRICS}, "edit_s": v["edit_s"],
                              "eval_s": v[f"{key}_eval_s"]}
                  for seed, v in data.items() if seed.isdigit()}
            parts.append(table("wise", f"WISE: editbench {data['method']} in process "
                               f"(editbench_wise_grouped.py), {label}", ee, eb))
    return parts


def main():
    global EDITS
    args = sys.argv[1:]
    if "--edits" in args:
        at = args.index("--edits")
        EDITS = int(args[at + 1])
        del args[at:at + 2]
    folder = Path(args[0])
    parts = [f"# EasyEdit 14cea82 against editbench on the pocket world, {EDITS:,} sequential "
             "edits", ""]
    for method, label in (("wise", "WISE"), ("grace", "GRACE"), ("ft-m", "FT-M")):
        store = folder / f"eb-{method}" / "results.sqlite"
        eb = editbench_scores(store, method) if store.exists() else {}
        generated = folder / "eb-grace-generated.json"
        if method == "grace" and generated.exists():
            eb_gen = {int(k): {**{m: 100 * v[m] for m in METRICS}, "edit_s": v["edit_s"],
                               "eval_s": 0.0}
                      for k, v in json.loads(generated.read_text()).items()}
            parts.append(table(method, "GRACE, both sides scored as EasyEdit scores GRACE "
                               "(generated tokens, answer tokenized after a space; editbench "
                               "side: editbench_grace_generated.py, eval time not measured)",
                               easyedit_scores(folder, method, key="grace_spaced"), eb_gen))
        if method == "grace":
            parts.append(table(method, "GRACE (EasyEdit's generated-token score, answer tokenized "
                               "after a space; see README)",
                               easyedit_scores(folder, method, key="grace_spaced"), eb))
            label = "GRACE: EasyEdit's score as released (bare answer tokenized)"
        parts.append(table(method, label, easyedit_scores(folder, method), eb))
        unshimmed = easyedit_scores(folder, method, "-noshim")
        if unshimmed:
            parts.append(table(method, f"{label}: EasyEdit without the sequential_edit shim",
                               unshimmed, eb))
    parts += wise_preset_tables(folder)
    for flag in ("templates-period", "loc-own", "mask-pads", "all3"):
        diag = easyedit_scores(folder, "wise", suffix=f"-{flag}", prefix="diag")
        if diag:
            store = folder / "eb-wise" / "results.sqlite"
            eb = editbench_scores(store, "wise") if store.exists() else {}
            flags = ("--templates-period --loc-own --mask-pads" if flag == "all3"
                     else f"--{flag}")
            parts.append(table("wise", f"Diagnostic, not the release: EasyEdit WISE with "
                               f"{flags}", diag, eb))
    extra_store = folder / "eb-wise-extra" / "results.sqlite"
    extra_ee = easyedit_scores(folder, "wise", prefix="extra", seeds=(3, 4))
    if extra_store.exists() and extra_ee:
        both_ee = {**easyedit_scores(folder, "wise"), **extra_ee}
        both_eb = {**editbench_scores(folder / "eb-wise" / "results.sqlite", "wise"),
                   **editbench_scores(extra_store, "wise")}
        parts.append(table("wise", "Supplement, not under the rule: WISE over seeds 0-4",
                           both_ee, both_eb, seeds=(0, 1, 2, 3, 4)))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
