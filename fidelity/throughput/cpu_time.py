"""CPU seconds of a run's edits alone, for timing on a shared machine (issue 28).

``measure.py`` reads the store's wall-clock ``edit`` phase, which other processes on a loaded
machine stretch by several times. This script resolves the same run (``editbench.plan``'s
``resolve``), builds the method as the runner does, prepares it (a trained editor comes from the
case's cache, untimed) and times each batch's ``apply`` with ``time.process_time``: the CPU
seconds of this one-thread process, which another process's load changes far less. Prints one
JSON line. Run it with either checkout first on ``PYTHONPATH``.

    OMP_NUM_THREADS=1 PY cpu_time.py CACHE_DIR REPEATS 'RUN OPTIONS AS JSON'
    OMP_NUM_THREADS=1 .venv/bin/python cpu_time.py compare BEFORE_ROOT WORK ROUNDS [CASE,...]

``compare`` runs every case (``CASES``) with both checkouts, alternating, ROUNDS processes each of
three timed repeats, and prints the best CPU seconds of each side and their ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "artifacts" / "models" / "pocket-5cd5fddbcd24c6f2")
ULTRA = {"lr": "3e-3", "module_names": "model.layers.1.mlp.gate_proj,model.layers.2.mlp.up_proj"}
TURNS_OF_20 = {"edits": 100, "batch_size": 20, "checkpoints": [100], "gen_eval": False}
#: measure.py's cases as ``RunSpec`` fields (the same runs, the same caches)
CASES: dict[str, dict] = {
    "ultraedit@release turns of 100": {
        "methods": ["ultraedit@release"], "params": {"ultraedit": ULTRA}, "edits": 300,
        "batch_size": 100, "checkpoints": [300], "gen_eval": False},
    **{f"{label} turns of 20": {"methods": [label],
                                "params": {label.split("@")[0]: {"edit_lr": "1e-2"}},
                                **TURNS_OF_20}
       for label in ("rledit@release", "malmen@rledit-release", "mend@rledit-release")},
    "ft-m one by one": {"methods": ["ft-m"], "edits": 100, "batch_size": 1,
                        "checkpoints": [100], "gen_eval": False},
    "locft-bf one call in chunks of 10": {
        "methods": ["locft-bf"], "params": {"locft-bf": {"chunk": "10"}}, "edits": 100,
        "batch_size": 100, "checkpoints": [100], "gen_eval": False},
    "ultraedit": {"methods": ["ultraedit"], "edits": 100},
    "ft-m": {"methods": ["ft-m"], "edits": 100},
    "locft-bf": {"methods": ["locft-bf"], "edits": 100},
}


def compare(before: str, work: Path, rounds: int, cases: list[str]) -> None:
    results = {}
    for case in cases:
        slug = case.replace(" ", "_").replace("@", "-").replace(",", "")
        cache = work / "cache" / slug
        options = json.dumps({**CASES[case], "model": MODEL})
        seen: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for side in seen:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                if side == "before":
                    env["PYTHONPATH"] = before
                done = subprocess.run([sys.executable, __file__, str(cache), "3", options],
                                      env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{case} {side}: {done.stderr[-2000:]}")
                seen[side] += json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]
        best = {side: min(values) for side, values in seen.items()}
        results[case] = {"cpu_s": seen, "best": best, "speedup": best["before"] / best["after"]}
        print(f"{case}: {results[case]}", file=sys.stderr, flush=True)
        (work / "cpu_results.json").write_text(json.dumps(results, indent=1))
    print("| case | before: edit CPU s (best) | after | speed-up |\n| --- | --- | --- | --- |")
    for case, r in results.items():
        print(f"| {case} | {r['best']['before']:.3f} | {r['best']['after']:.3f} | "
              f"{r['speedup']:.2f}x |")


def main() -> None:
    if sys.argv[1] == "compare":
        chosen = sys.argv[5].split(",") if len(sys.argv) > 5 else list(CASES)
        return compare(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), chosen)
    import torch

    torch.set_num_threads(1)
    from editbench.core.method import EditContext
    from editbench.core.models import ModelLayout, load_model
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec

    cache, repeats, options = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    spec = RunSpec(**{**options, "cache_dir": cache, "out": cache / "unused", "device": "cpu"})
    plan = resolve(spec)
    (setup,) = plan.methods
    seconds = []
    for _ in range(repeats):
        torch.manual_seed(plan.seed)
        model, tokenizer = load_model(plan.model_source, plan.device, plan.dtype)
        ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model),
                          device=plan.device, cache_dir=plan.cache_dir, task=plan.task,
                          seed=plan.seed, generator=torch.Generator().manual_seed(plan.seed),
                          train_records=plan.train_records, prompt_format=plan.prompt_format)
        method = setup.cls(setup.config, ctx)
        method.prepare()
        total = 0.0
        for start, stop in plan.batches:
            begin = time.process_time()
            method.apply(list(plan.records[start:stop]))
            total += time.process_time() - begin
        seconds.append(total)
    print(json.dumps({"cpu_s": seconds, "editbench": __import__("editbench").__file__}))


if __name__ == "__main__":
    main()
