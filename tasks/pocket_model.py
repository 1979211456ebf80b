"""Teach a small causal LM the pocket world, offline, and cache it with ``save_pretrained``.

A byte-level BPE tokenizer is trained on the world's sentences and a Llama-architecture model
built from a config learns them with AdamW and a one-cycle schedule. Nothing is downloaded. The
result is cached by a hash of the world and training settings and of the code that trains it
(this module and the world's, with what they import: ``core/identity.py``), so later runs load it
and a change of that code trains again. Training
holds the cache entry's lock: a second process waits for the first and loads its model.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.artifacts import coded, located, shipped
from ..core.cache import building, cache_root, publish_dir, staging_dir
from ..core.configs import config_hash
from ..core.faults import fault_point
from ..core.identity import component_code
from ..core.micro import train_tokenizer
from ..core.progress import progress
from ..core.tokenize import pad

log = logging.getLogger(__name__)

#: part of the shipped model's name (3: the world's step-by-step sentences). A change of the code
#: that trains it (or writes the world's sentences) needs no bump: the cache key carries its hash
FORMAT_VERSION = 3


@dataclass(frozen=True)
class PocketModelConfig:
    vocab_size: int = 1000
    hidden_size: int = 128
    intermediate_size: int = 384
    n_layers: int = 4
    n_heads: int = 4
    steps: int = 2400
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    #: batches are cut from runs of this many batches' sentences sorted by length (as Hugging Face's
    #: ``group_by_length``), so a batch pads to about its own sentences' length; 1: plain shuffled
    #: batches, padded to their longest. With the step-by-step chains (the longest sentences, in
    #: nearly every plain batch) 8 trains in 201 s against about 240 s (docs/pocket-world.md)
    length_groups: int = 8


#: ``--param pocket.model=NAME``. ``small`` (the default) keeps the architecture the methods'
#: pocket defaults were chosen on (4 layers, width 128) and trains on the 11-relation world for
#: 2,400 steps (1,400 on the 4-relation world before: the world has about 1.7x the sentences, and
#: a step about 1.15x the tokens); ``large`` is wider, deeper and trained longer (about 9x the
#: training compute), for readers who want the two-hop questions answered better
#: (docs/pocket-world.md).
MODEL_SIZES: dict[str, PocketModelConfig] = {
    "small": PocketModelConfig(),
    "large": PocketModelConfig(hidden_size=256, intermediate_size=768, n_layers=6, n_heads=8,
                               steps=4800, lr=2e-3),
}


def build_model(config: PocketModelConfig, vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads, max_position_embeddings=64, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(model_config)


def length_grouped_batches(lengths: list[int], batch_size: int, groups: int,
                           rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of indices, each sentence at most once per epoch. Each run of ``groups``
    batches is drawn at random, sorted by length and cut, and its batches are shuffled, so the
    sentences of one batch have similar lengths and little of a step's work is padding."""
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        span = batch_size * groups
        for start in range(0, len(order) - batch_size + 1, span):
            run = sorted(order[start:start + span], key=lengths.__getitem__)
            cut = [run[i:i + batch_size] for i in range(0, len(run) - batch_size + 1, batch_size)]
            rng.shuffle(cut)
            yield from cut


def train_pocket_model(sentences: list[str], config: PocketModelConfig, out_dir: Path,
                       device: torch.device | str = "cpu") -> None:
    """Train tokenizer and model on ``sentences`` and ``save_pretrained`` both into ``out_dir``."""
    tokenizer = train_tokenizer(sentences, config.vocab_size)
    model = build_model(config, len(tokenizer)).to(device)
    encoded = [tokenizer(s + "</s>")["input_ids"] for s in sentences]
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=config.steps, pct_start=0.1)
    model.train()
    batches = length_grouped_batches([len(e) for e in encoded], config.batch_size,
                                     config.length_groups, rng)
    bar = progress(range(config.steps), desc="training pocket model", unit="step")
    for _ in bar:
        batch = [encoded[i] for i in next(batches)]
        ids, mask = (t.to(device) for t in pad(batch, 0))
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError("pocket model training diverged (non-finite loss)")
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        fault_point("pocket-training")
    model.eval().to("cpu")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def building_code(world_type: type) -> str:
    """The hash of the code a pocket model's training runs: this module, the world's module (its
    sentences are the training text) and what they import."""
    return component_code(__name__, world_type.__module__)


def ensure_pocket_model(world, cache_dir: Path | None = None,
                        config: PocketModelConfig | None = None, build: bool = True) -> Path:
    """The model folder for ``world``: the package's shipped build where it ships this one, else the
    cache's, trained first if it is not there yet (``build=False``: only the folder, unchecked)."""
    config = config or PocketModelConfig()
    digest = config_hash(FORMAT_VERSION, asdict(world.config), asdict(config))
    entry, code = f"models/pocket-{digest}", building_code(type(world))
    final = (cache_dir or cache_root()) / coded(entry, code)
    if not build:
        return located(entry, code=code) or final
    # the package's own build, the same on every machine (core/artifacts.py)
    packaged = shipped(entry, code=code)
    if packaged is not None:
        log.info("loaded the shipped pocket model from %s", packaged)
        return packaged
    if not (final / "config.json").exists():
        with building(final, f"the pocket model {final}"):
            # another process may have built it while we waited
            if not (final / "config.json").exists():
                log.info("training the pocket model (once; cached in %s)", final)
                tmp = staging_dir(final)
                train_pocket_model(world.training_sentences(), config, tmp)
                return publish_dir(tmp, final)
    log.info("loaded the cached pocket model from %s", final)
    return final
