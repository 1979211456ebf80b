"""Edit and evaluation seconds of both sides, taken apart and alternated: release, editbench,
release, ... (REPEATS each), float32, lr 3e-3, seed 0 (run_release.py and run_editbench.sh as in
the suite). Medians and minima; on a shared machine the minimum is the least disturbed run.

    .venv/bin/python fidelity/ultraedit-release/timing.py RELEASE_DIR WORK [REPEATS] > timing.md
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from collect import editbench_side  # noqa: E402

RELEASE_PY = os.environ.get("RELEASE_PYTHON", "/tmp/ultraedit-venv/bin/python")


def main() -> None:
    release, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs: dict[str, list[dict]] = {"release": [], "editbench": []}
    for i in range(repeats):
        out = work / "timing" / f"release-r{i}"
        subprocess.run([RELEASE_PY, str(HERE / "run_release.py"), "--release", str(release),
                        "--seed", "0", "--data", str(work), "--out", str(out), "--lr", "3e-3"],
                       env=env, check=True, capture_output=True)
        runs["release"].append(json.loads((out / "result.json").read_text()))
        subprocess.run([str(HERE / "run_editbench.sh"), str(work), f"timing/editbench-r{i}",
                        "0", "3e-3", "--dtype", "float32"],
                       env=env, check=True, capture_output=True)
        side = editbench_side(work / "timing" / f"editbench-r{i}" / "editbench" / "s0")
        runs["editbench"].append({k: v for k, v in side.items() if k != "per_record"})
    lines = ["| side | edit s (median / min) | eval s (median / min) | edits/s (median) |",
             "| --- | --- | --- | --- |"]
    summary = {}
    for side, results in runs.items():
        edit, evals = [r["edit_s"] for r in results], [r["eval_s"] for r in results]
        summary[side] = {"edit_s": edit, "eval_s": evals}
        lines.append(f"| {side} | {median(edit):.2f} / {min(edit):.2f} | "
                     f"{median(evals):.2f} / {min(evals):.2f} | {300 / median(edit):.0f} |")
    ratio = median(summary["release"]["edit_s"]) / median(summary["editbench"]["edit_s"])
    lines += ["", f"editbench's edit throughput over the release's (medians): {ratio:.2f}x"]
    summary["edit_throughput_ratio"] = ratio
    print("\n".join(lines))
    (work / "timing.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
