"""``editbench bench``: measure editbench itself — edit throughput, scoring speed, overhead, memory.

Every figure comes from one invocation on this machine, so they can be compared with each other:

1. edit throughput per method (edits/s, s/edit) at each size of a ladder up to 20,000 edits on a
   micro model, with peak memory at each size (one lifelong run per method, checkpoints at the sizes);
2. evaluation throughput: the batched probe against scoring one pair at a time (the way most
   editing repositories score), same pairs and model;
3. harness overhead: the share of each method's wall time spent neither in ``apply`` nor in the
   model's forward passes nor in ``prepare`` (target: under 3%);
4. memory growth: peak memory against edits per method.

Results are printed as tables and written to ``OUT/bench.json`` for reports.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from .configs import parse_overrides
from .models import load_model, resolve_device
from .probe import HFProbe
from .records import ScoringPair
from .timing import device_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicroModel:
    hidden: int = 64
    layers: int = 4
    vocab: int = 400


def build_micro_model(folder: Path, spec: MicroModel, seed: int = 0) -> Path:
    """A random-weight Llama-architecture model with a tokenizer trained on a small pocket world."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..tasks.pocket import PocketConfig, PocketWorld
    from ..tasks.pocket_model import train_tokenizer

    if (folder / "config.json").exists():
        return folder
    tokenizer = train_tokenizer(PocketWorld(PocketConfig(n_entities=60)).training_sentences(), spec.vocab)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=4 * spec.hidden,
                         num_hidden_layers=spec.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def scoring_throughput(model_path: Path, device: torch.device, n_pairs: int) -> dict[str, float]:
    """Batched scoring against one pair per forward pass, on the same pairs."""
    from ..tasks.pocket import PocketConfig, PocketWorld

    world = PocketWorld(PocketConfig(n_entities=max(60, n_pairs // 9)))
    records = world.records["eval"]
    pairs = [ScoringPair(p, r.target_new) for r in records for p in (r.prompt, *r.paraphrases)][:n_pairs]
    model, tokenizer = load_model(model_path, device, torch.float32)
    probe = HFProbe(model, tokenizer, device)
    probe.score(pairs[:64])  # warm up kernels and the encoding cache alike for both
    started = time.perf_counter()
    batched = probe.score(pairs)
    batched_s = time.perf_counter() - started
    single = HFProbe(model, tokenizer, device, max_tokens=1)  # every batch holds one pair
    started = time.perf_counter()
    one_by_one = [single.score([pair])[0] for pair in pairs]
    single_s = time.perf_counter() - started
    mismatches = sum(a.predictions != b.predictions for a, b in zip(batched, one_by_one, strict=True))
    return {"pairs": len(pairs), "batched_s": batched_s, "one_at_a_time_s": single_s,
            "batched_pairs_per_s": len(pairs) / batched_s, "one_at_a_time_pairs_per_s": len(pairs) / single_s,
            "speedup": single_s / batched_s, "prediction_mismatches": mismatches}


def edit_throughput(model_path: Path, out: Path, methods: tuple[str, ...], sizes: tuple[int, ...],
                    batch_size: int, eval_sample: int, device: str, params: dict) -> list[dict]:
    """One lifelong run per method with checkpoints at ``sizes``; figures read back from its store."""
    from .runner import Runner, RunSpec
    from .store import load_results

    edits = max(sizes)
    n_entities = int(edits / (0.6 * 4)) + 20  # the pocket eval split holds 60% of entities x 4 relations
    rows = []
    for method in methods:
        spec = RunSpec(methods=(method,), task="pocket", model=str(model_path), edits=edits, batch_size=batch_size,
                       checkpoints=",".join(map(str, sizes)), eval_sample=eval_sample, device=device,
                       out=out / "runs" / method,
                       params={"pocket": {"n_entities": str(n_entities)}, **params})
        runner = Runner(spec)
        started = time.perf_counter()
        outcome = runner.run()
        wall = time.perf_counter() - started
        store = load_results(spec.out)
        timings = store.timings()
        timings = timings[timings["run_id"] == outcome.run_id]
        phase = timings.groupby("phase")["seconds"].sum()
        checkpoints = store.checkpoints().query("method == @method and run_id == @outcome.run_id")
        model_work = sum(phase.get(p, 0.0) for p in ("edit", "eval_forward", "prepare"))
        # the baseline's own forward passes are not split out; count the whole baseline as model work
        model_work += phase.get("baseline", 0.0)
        for _, row in checkpoints.iterrows():
            rows.append({
                "method": method, "edits": int(row["n_edits"]), "status": outcome.statuses[method],
                "edit_seconds": row["edit_seconds"], "seconds_per_edit": row["seconds_per_edit"],
                "edits_per_second": row["n_edits"] / row["edit_seconds"] if row["edit_seconds"] else float("inf"),
                "peak_memory_mib": row["peak_memory_bytes"] / 2**20,
                "run_wall_s": wall, "apply_s": phase.get("edit", 0.0), "forward_s": phase.get("eval_forward", 0.0),
                "prepare_s": phase.get("prepare", 0.0), "load_s": phase.get("load", 0.0),
                "eval_s": phase.get("eval", 0.0), "overhead_share": max(0.0, wall - model_work) / wall,
            })
    return rows


def _table(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    from ..reports.summary import format_table

    return format_table(pd.DataFrame(rows)[columns])


@click.command()
@click.option("--methods", default=None, metavar="A,B", help="Methods to measure; default: every method that needs no download.")
@click.option("--sizes", default="100,1000,5000,20000", show_default=True, help="Edit counts to report.")
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--eval-sample", type=int, default=50, show_default=True, help="Edits scored at each size.")
@click.option("--pairs", type=int, default=2000, show_default=True, help="Pairs for the scoring-throughput test.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE", help="Method settings, as for run.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("editbench-bench"), show_default=True)
def bench(methods: str | None, sizes: str, batch_size: int, eval_sample: int, pairs: int, device: str,
          params: tuple[str, ...], out: Path) -> None:
    """Measure editbench's own speed and memory (prints tables, writes OUT/bench.json)."""
    from ..methods import METHODS

    try:
        size_list = tuple(sorted(int(s) for s in sizes.split(",") if s.strip()))
        method_list = tuple(m for m in (methods or "").split(",") if m) or tuple(
            n for n, cls in METHODS.items() if not cls.needs_download)
        overrides = parse_overrides(params)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_device(device)
    model_path = build_micro_model(out / "micro-model", MicroModel())
    scoring = scoring_throughput(model_path, resolved, pairs)
    throughput = edit_throughput(model_path, out, method_list, size_list, batch_size, eval_sample, device, overrides)
    result = {"device": device_name(resolved), "torch": torch.__version__, "python": platform.python_version(),
              "micro_model": vars(MicroModel()), "batch_size": batch_size, "eval_sample": eval_sample,
              "scoring": scoring, "edit_throughput": throughput}
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    click.echo(f"device: {result['device']}")
    click.echo(f"\nscoring {scoring['pairs']} pairs: batched {scoring['batched_s']:.2f} s, one at a time "
               f"{scoring['one_at_a_time_s']:.2f} s -> {scoring['speedup']:.1f}x "
               f"({scoring['prediction_mismatches']} prediction mismatches)")
    click.echo("\nedit throughput and peak memory:")
    click.echo(_table(throughput, ["method", "edits", "status", "edits_per_second", "seconds_per_edit", "peak_memory_mib"]))
    per_method = {r["method"]: r for r in throughput}
    click.echo("\nharness overhead (whole run, share of wall time outside apply, prepare and forward passes):")
    click.echo(_table(list(per_method.values()),
                      ["method", "run_wall_s", "apply_s", "prepare_s", "forward_s", "eval_s", "load_s", "overhead_share"]))
    click.echo(f"\nwritten: {out / 'bench.json'}")
