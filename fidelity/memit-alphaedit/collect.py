"""The side-by-side tables: the releases' end-of-stream scores (run_release.py's JSON files) against
editbench's at the last checkpoint (its results.sqlite), per seed, with README.md's decision rule.

    python collect.py RESULTS_DIR [EDITS] [TURN] > results.md

RESULTS_DIR holds rel-ALG-nEDITS-tTURN-sSEED.json and eb-METHOD-nEDITS-tTURN/results.sqlite
(run_release.sh and run_editbench.sh write them). Token accuracies in % (0-100).

Decision rule (fixed before any result was looked at; README.md): for each method and each of ES,
GS, LS, editbench's mean over seeds 0, 1, 2 agrees with the release's mean when the difference is
at most 2 points, or at most the release's own seed spread (max - min of its three seeds) where
that is wider. A method agrees when all three agree. The verdict is taken on the release's scores
with the target prefix joined as tokenized (``ES_plain``/``GS_plain``; the release's Llama branch
adds a space, eval_utils_zsre.py:57) and LS averaged per neighbour, as editbench averages; the
rule applied to the release's scores as printed is shown beside it.
"""

import json
import sqlite3
import sys
from pathlib import Path

EB_METRICS = {"ES": "efficacy_acc", "GS": "generalization_acc", "LS": "specificity_acc"}
VERDICT_KEYS = {"ES": "ES_plain", "GS": "GS_plain", "LS": "LS"}  # the release's score compared
AS_RELEASED = {"ES": "ES", "GS": "GS", "LS": "LS_flat"}
SEEDS = (0, 1, 2)
TOLERANCE = 2.0  # points
METHODS = (("MEMIT", "memit"), ("AlphaEdit", "alphaedit"))


def store_cells(store: Path, method: str, edits: int) -> dict[int, dict]:
    """Per seed of one editbench store: the mean scores (%), timings and every edit's scores."""
    con = sqlite3.connect(store)
    out = {}
    for run_id, seed in con.execute("SELECT run_id, seed FROM runs"):
        timing = con.execute(
            "SELECT edit_seconds, eval_seconds FROM checkpoints WHERE run_id=? AND method=? "
            "AND n_edits=?", (run_id, method, edits)).fetchone()
        if timing is None:
            continue
        per_edit: dict[str, dict[str, float]] = {}
        for short, metric in EB_METRICS.items():
            for uid, value in con.execute(
                    "SELECT uid, value FROM scores WHERE run_id=? AND method=? AND n_edits=? "
                    "AND metric=?", (run_id, method, edits, metric)):
                per_edit.setdefault(uid, {})[short] = value
        out[seed] = {"edit_s": timing[0], "eval_s": timing[1], "per_edit": per_edit}
    return out


def editbench_cells(folder: Path, method: str, tag: str, edits: int, turn: int) -> dict[int, dict]:
    """editbench's side of a table: from the stores ``eb-METHOD{tag}-nN-tT*`` (one per run of
    run_editbench.sh; seeds run apart sit in stores named with a suffix) or, where there are
    none, from ``editbench.json`` (gather.sh: the same cells keyed ``STORE/METHOD/seedS``)."""
    prefix = f"eb-{method}{tag}-n{edits}-t{turn}"
    cells: dict[int, dict] = {}
    for store in sorted(folder.glob(f"{prefix}*/results.sqlite")):
        cells.update(store_cells(store, method, edits))
    saved = folder / "editbench.json"
    if not cells and saved.exists():
        for key, cell in json.loads(saved.read_text()).items():
            store, cell_method, seed = key.split("/")
            if store.startswith(prefix) and cell_method == method:
                cells[int(seed.removeprefix("seed"))] = cell
    for cell in cells.values():
        for short in EB_METRICS:
            values = [e[short] for e in cell["per_edit"].values() if short in e]
            cell[short] = 100 * sum(values) / len(values) if values else None
    return {seed: cell for seed, cell in cells.items() if cell["ES"] is not None}


def release_scores(folder: Path, alg: str, edits: int, turn: int, tag: str = "") -> dict:
    out = {}
    for seed in SEEDS:
        path = folder / f"rel-{alg}{tag}-n{edits}-t{turn}-s{seed}.json"
        if path.exists():
            data = json.loads(path.read_text())
            end = data["end_of_stream"]
            out[seed] = {k: 100 * v for k, v in end.items()}
            out[seed]["pre"] = {k: 100 * v for k, v in data["pre_edit"].items()}
            out[seed]["edit_s"], out[seed]["eval_s"] = data["edit_s"], data["eval_s"]
    return out


def per_edit_differences(folder: Path, alg: str, edits: int, turn: int, tag: str,
                         eb: dict[int, dict]) -> dict[int, dict[str, int]]:
    """Per seed, how many edits' ES/GS/LS differ between the sides (release's verdict scores
    against editbench's per-edit rows)."""
    out = {}
    for seed in SEEDS:
        path = folder / f"rel-{alg}{tag}-n{edits}-t{turn}-s{seed}.json"
        if not path.exists() or seed not in eb:
            continue
        rows = json.loads(path.read_text())["per_edit"]
        theirs = eb[seed]["per_edit"]
        out[seed] = {short: sum(abs(r[VERDICT_KEYS[short]] - theirs[r["uid"]][short]) > 1e-6
                                for r in rows if r["uid"] in theirs)
                     for short in EB_METRICS}
    return out


def fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def verdict(rel: dict, eb: dict, keys: dict) -> tuple[list[str], bool | None]:
    common = sorted(set(rel) & set(eb))
    if not common:
        return ["no seed ran on both sides"], None
    lines = ["| metric | release mean | editbench mean | eb - release | release seed range | "
             "tolerance | verdict |", "| --- | --- | --- | --- | --- | --- | --- |"]
    oks = []
    for short, key in keys.items():
        r_vals = [rel[s][key] for s in common]
        b_vals = [eb[s][short] for s in common]
        r_mean, b_mean = sum(r_vals) / len(r_vals), sum(b_vals) / len(b_vals)
        spread = max(r_vals) - min(r_vals)
        tol = max(TOLERANCE, spread)
        ok = abs(b_mean - r_mean) <= tol
        oks.append(ok)
        lines.append(f"| {short} | {r_mean:.1f} | {b_mean:.1f} | {b_mean - r_mean:+.1f} | "
                     f"{spread:.1f} | {tol:.1f} | {'agree' if ok else 'DIFFER'} |")
    lines.append("")
    lines.append(f"Seeds on both sides: {common}. Verdict: "
                 + ("**agrees** on ES, GS and LS" if all(oks) else "**differs**")
                 + ("" if len(common) == 3
                    else " (not all three seeds: no verdict under the rule)"))
    return lines, all(oks)


def table(label: str, rel: dict, eb: dict) -> str:
    lines = [f"### {label}", "",
             "| seed | rel ES | rel GS | rel LS | eb ES | eb GS | eb LS | rel ES / GS / LS as "
             "printed | rel edit s + eval s | eb edit s + eval s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for seed in SEEDS:
        r, b = rel.get(seed), eb.get(seed)
        cells = [fmt(r[k]) if r else "-" for k in VERDICT_KEYS.values()]
        cells += [fmt(b[k]) if b else "-" for k in EB_METRICS]
        printed = " / ".join(fmt(r[k]) for k in AS_RELEASED.values()) if r else "-"
        t_r = f"{r['edit_s']:.0f} + {r['eval_s']:.0f}" if r else "-"
        t_b = f"{b['edit_s']:.0f} + {b['eval_s']:.0f}" if b else "-"
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {printed} | {t_r} | {t_b} |")
    lines.append("")
    main_lines, _ = verdict(rel, eb, VERDICT_KEYS)
    lines += ["Rule on the verdict scores (prefix joined as tokenized, LS per neighbour):", "",
              *main_lines, ""]
    printed_lines, _ = verdict(rel, eb, AS_RELEASED)
    lines += ["The same rule on the release's scores as printed (Llama branch's extra space, "
              "LS over all neighbour tokens):", "", *printed_lines, ""]
    if rel:
        pre = rel[sorted(rel)[0]]["pre"]
        lines.append("Unedited model, release scoring (seed "
                     f"{sorted(rel)[0]}'s records): ES {pre['ES_plain']:.1f}, GS "
                     f"{pre['GS_plain']:.1f}, LS {pre['LS']:.1f}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1])
    edits = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    turn = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    tag = sys.argv[4] if len(sys.argv) > 4 else ""
    parts = [f"## {edits} edits in turns of {turn}{' (' + tag + ')' if tag else ''}", ""]
    for alg, method in METHODS:
        rel = release_scores(folder, alg, edits, turn, tag)
        eb = editbench_cells(folder, method, tag, edits, turn)
        parts.append(table(f"{alg} (release) / {method} (editbench)", rel, eb))
        diffs = per_edit_differences(folder, alg, edits, turn, tag, eb)
        if diffs:
            parts.append(f"Edits (of {edits}) whose score differs between the sides, per seed: "
                         + "; ".join(f"seed {seed}: " + ", ".join(f"{k} {v}" for k, v in c.items())
                                     for seed, c in diffs.items()))
            parts.append("")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
