"""Edit seconds and per-edit scores of two editbench checkouts on the same runs (issue 28).

Each case is one ``editbench run`` (pocket model, CPU, one thread). The two sides (``before``: a
checkout given by ``--before ROOT``, a folder holding ``editbench`` as a package; ``after``: the
editbench this interpreter imports) alternate, REPEATS times each; the edit seconds are the store's
``edit`` phase (training and scoring timed apart), best of the repeats. The scores of the first
repeat of each side are compared per edit, every stored metric.

    OMP_NUM_THREADS=1 .venv/bin/python fidelity/throughput/measure.py --before /tmp/before-root \
        --work /tmp/speed-runs --repeats 3 [--cases ultraedit,ft-m] > results.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "artifacts" / "models" / "pocket-5cd5fddbcd24c6f2"
ULTRA_MODULES = "model.layers.1.mlp.gate_proj,model.layers.2.mlp.up_proj"
TURNS_OF_20 = ["--edits", "100", "--batch-size", "20", "--checkpoints", "100", "--gen-eval", "off"]
#: name -> the run's options. The default runs are the brief's score check (``--edits 100 --seed
#: 0``); the release-shaped ones are the fidelity suites' turn structures.
CASES: dict[str, list[str]] = {
    "ultraedit": ["--methods", "ultraedit", "--edits", "100"],
    "ultraedit@release turns of 100": [
        "--methods", "ultraedit@release", "--param", "ultraedit.lr=3e-3",
        "--param", f"ultraedit.module_names={ULTRA_MODULES}", "--edits", "300",
        "--batch-size", "100", "--checkpoints", "300", "--gen-eval", "off"],
    "rledit@release turns of 20": ["--methods", "rledit@release",
                                  "--param", "rledit.edit_lr=1e-2", *TURNS_OF_20],
    "malmen@rledit-release turns of 20": ["--methods", "malmen@rledit-release",
                                  "--param", "malmen.edit_lr=1e-2", *TURNS_OF_20],
    "mend@rledit-release turns of 20": ["--methods", "mend@rledit-release",
                                  "--param", "mend.edit_lr=1e-2", *TURNS_OF_20],
    "ft-m": ["--methods", "ft-m", "--edits", "100"],
    "ft-m one by one": ["--methods", "ft-m", "--edits", "100", "--batch-size", "1",
                        "--checkpoints", "100", "--gen-eval", "off"],
    "locft-bf": ["--methods", "locft-bf", "--edits", "100"],
    "locft-bf one call in chunks of 10": [
        "--methods", "locft-bf", "--param", "locft-bf.chunk=10", "--edits", "100",
        "--batch-size", "100", "--checkpoints", "100", "--gen-eval", "off"],
    # the memories trained step by step on one batch per edit (lower_blocks.same_batch), at the
    # default run's settings and at the EasyEdit side-by-side's (fidelity/easyedit/run_all.sh)
    "grace": ["--methods", "grace", "--edits", "100"],
    "wise": ["--methods", "wise", "--edits", "100"],
    "memoir": ["--methods", "memoir", "--edits", "50"],
    # the value steps of the locate-then-edit methods (lower_blocks.same_batch, through the block)
    "memit": ["--methods", "memit", "--edits", "100"],
    "alphaedit": ["--methods", "alphaedit", "--edits", "100"],
    "grace easyedit one by one": [
        "--methods", "grace", "--param", "grace.layer=3", "--param", "grace.n_iter=50",
        "--param", "grace.eps=1.0", "--param", "grace.lr=1.0", "--edits", "100",
        "--batch-size", "1", "--checkpoints", "100", "--gen-eval", "off"],
    "wise@easyedit one by one": [
        "--methods", "wise@easyedit", "--param", "wise.layer=3", "--param", "wise.n_iter=70",
        "--param", "wise.n_templates=10", "--param", "wise.lr=1.0", "--edits", "100",
        "--batch-size", "1", "--checkpoints", "100", "--gen-eval", "off"],
}


def run(side: str, before: Path, case: str, out: Path, cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if side == "before":
        env["PYTHONPATH"] = str(before)
    command = [sys.executable, "-m", "editbench.harness.cli.group", "--threads", "1", "run",
               "--model", str(MODEL), "--device", "cpu", "--seed", "0", "--out", str(out),
               "--cache-dir", str(cache), *CASES[case]]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} {case}: exit {done.returncode}\n{done.stderr[-3000:]}")
    probe = ("import json,sys; from editbench.core.store import load_results; "
             "s = load_results(sys.argv[1]); t = s.timings(); rows = s.per_edit(); "
             "print(json.dumps({'edit_s': float(t[t.phase == 'edit'].seconds.sum()), "
             "'editbench': __import__('editbench').__file__, "
             "'rows': rows.sort_values(['method', 'n_edits', 'uid']).to_dict('records')}, "
             "default=str))")
    read = subprocess.run([sys.executable, "-c", probe, str(out)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(read.stdout)


def largest_difference(a: list[dict], b: list[dict]) -> tuple[float, int]:
    """The largest absolute difference over every numeric per-edit field, and the values
    compared."""
    if len(a) != len(b):
        raise SystemExit(f"different row counts: {len(a)} and {len(b)}")
    worst, n = 0.0, 0
    for x, y in zip(a, b):
        for key, value in x.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                other = y[key]
                if value != value and other != other:  # both NaN
                    continue
                worst = max(worst, abs(float(value) - float(other)))
                n += 1
    return worst, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    results = {}
    for case in args.cases.split(","):
        slug = case.replace(" ", "_").replace("@", "-").replace(",", "")
        cache = args.work / "cache" / slug  # one per case: an editor trained once, read by both
        seen: dict[str, list[dict]] = {"before": [], "after": []}
        for repeat in range(args.repeats):
            for side in ("before", "after"):
                out = args.work / side / slug / f"r{repeat}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                seen[side].append(run(side, args.before, case, out, cache))
        worst, n = largest_difference(seen["before"][0]["rows"], seen["after"][0]["rows"])
        best = {side: min(r["edit_s"] for r in runs) for side, runs in seen.items()}
        results[case] = {"edit_s": {s: [r["edit_s"] for r in runs] for s, runs in seen.items()},
                         "best": best, "speedup": best["before"] / best["after"],
                         "largest_score_difference": worst, "values_compared": n,
                         "packages": {s: runs[0]["editbench"] for s, runs in seen.items()}}
        print(f"{case}: {results[case]}", file=sys.stderr, flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"| case | before: edit s (best of {args.repeats}) | after | speed-up | largest "
             "per-edit score difference (values compared) |", "| --- | --- | --- | --- | --- |"]
    for case, r in results.items():
        lines.append(f"| {case} | {r['best']['before']:.2f} | {r['best']['after']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['largest_score_difference']:.1e} "
                     f"({r['values_compared']:,}) |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
