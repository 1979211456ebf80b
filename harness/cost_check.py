"""``editbench plan``'s estimates against measured peaks on micro models of each architecture.

Each micro model is shaped like the published ones (an MLP a few times wider than the residual
stream, a vocabulary larger than both) but small enough to run anywhere; its measured peak (weights
plus the most held during the phase, ``core/memtrack.py``: the CUDA allocator's counter on a GPU, the
C heap on a CPU) is set beside the plan's. ``tests/test_costs.py`` requires agreement within 25% on
CPU; ``editbench selfcheck`` prints the same comparison on a GPU.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.costs import ModelShape, RunShape, evaluation_cost
from ..core.memtrack import PeakMemory
from ..core.method import EditContext, MethodRef
from ..core.models import ModelLayout
from ..core.probe import HFProbe
from ..core.records import ScoringPair

FAMILIES = ("llama", "gpt2", "gptj", "mistral", "qwen2", "gemma2")
METHODS_CHECKED = ("ft-l", "ft-m", "memit", "alphaedit", "mend", "ultraedit", "grace", "wise", "locft-bf", "retrieval")
HIDDEN = 128
PARAMS = {"memit": {"mom2_n_samples": "40"}, "alphaedit": {"mom2_n_samples": "40"}, "mend": {"max_steps": "0"}}


def micro_config(family: str, vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        return tf.GPT2Config(n_layer=4, n_embd=HIDDEN, n_head=4, n_positions=256, **common)
    if family == "gptj":
        return tf.GPTJConfig(n_layer=4, n_embd=HIDDEN, n_head=4, rotary_dim=16, n_positions=256, **common)
    cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config, "gemma2": tf.Gemma2Config}[family]
    extra = {"head_dim": 32} if family == "gemma2" else {}
    return cls(hidden_size=HIDDEN, intermediate_size=int(3.5 * HIDDEN), num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=256, **extra, **common)


class _Corpus:
    name = "pocket"

    def __init__(self, texts):
        self.texts = texts

    def corpus(self):
        return self.texts


@dataclass(frozen=True)
class CostCheck:
    family: str
    what: str  # evaluation or a method's largest non-evaluation phase
    measured: int
    planned: int

    @property
    def ratio(self) -> float:
        return self.planned / self.measured


def check_family(family: str, device: torch.device | str = "cpu", methods=METHODS_CHECKED) -> list[CostCheck]:
    """Measure the evaluation phase and each method's phases on a micro model of ``family``."""
    import transformers as tf

    from .. import methods as _registered  # noqa: F401
    from ..core.micro import train_tokenizer
    from ..tasks.pocket import PocketConfig, PocketWorld

    device = torch.device(device)
    world = PocketWorld(PocketConfig(n_entities=20))
    records = world.records["eval"][:60] + world.records["train"][:60]
    sentences = world.training_sentences()
    tokenizer = train_tokenizer(sentences, vocab_size=300)
    config = micro_config(family, len(tokenizer))
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config).to(device).eval().requires_grad_(False)  # as loaded for a run
    shape = ModelShape.from_config(config, torch.float32, family)
    pairs = [ScoringPair(r.prompt, r.target_new) for r in records] * 40
    tokens = sum(len(tokenizer(p.prompt + " " + p.target)["input_ids"]) for p in pairs[:100]) // 100
    run = RunShape(edits=10, batch_size=10, scored_records=len(pairs), pairs_per_record=1, tokens_per_record=tokens,
                   generated=False)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    checks = []
    probe = HFProbe(model, tokenizer, device)
    probe.score(pairs[:20])  # the first call builds caches that are no part of a phase
    with PeakMemory(device) as meter:
        probe.score(pairs)
    checks.append(CostCheck(family, "evaluation", weights + meter.peak,
                            weights + evaluation_cost(shape, run).transient_bytes))
    # the key statistics' corpus: long samples, so that its batches fill as a real corpus's do
    corpus = [" ".join(sentences[i:i + 60]) for i in range(0, 40 * 60, 60)]
    from .planner import plan_methods

    with tempfile.TemporaryDirectory() as scratch:
        def build(label: str, cache: str) -> None:
            ref = MethodRef.parse(label)
            ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=device,
                              cache_dir=Path(scratch) / cache, task=_Corpus(corpus), seed=0,  # type: ignore[arg-type]
                              generator=torch.Generator(), train_records=lambda: records[60:])
            method = ref.cls(ref.config(PARAMS), ctx)
            method.prepare()
            method.apply(records[:10])

        for label in methods:
            build(label, f"{label}-warm-up")  # first calls build caches that are no part of a phase
            with PeakMemory(device) as meter:  # everything the method holds and does, above the weights
                build(label, label)
            cost = plan_methods(shape, run, [label], PARAMS)[0].cost
            assert cost is not None
            planned = max(cost.peak(p) for p in cost.phases if p.phase != "evaluation")
            checks.append(CostCheck(family, label, weights + meter.peak, planned))
    return checks


def check_at_scale(config_path: str, device: torch.device | str, methods=("ft-m", "memit", "mend"),
                   dtype: torch.dtype = torch.bfloat16) -> list[CostCheck | str]:
    """The same comparison on a random-weight model built from a published config (no download):
    real shapes and dtype, so memory is the real model's; the scores mean nothing. A check that
    fails is returned as its error line, so one failure does not hide the others."""
    import transformers as tf

    from .. import methods as _registered  # noqa: F401
    from ..core.micro import train_tokenizer
    from ..tasks.pocket import PocketConfig, PocketWorld
    from .planner import model_shape, plan_methods

    device = torch.device(device)
    shape = model_shape(config_path, str(dtype).removeprefix("torch."))
    world = PocketWorld(PocketConfig(n_entities=20))
    records = world.records["eval"][:60] + world.records["train"][:60]
    sentences = world.training_sentences()
    tokenizer = train_tokenizer(sentences, vocab_size=300)
    torch.manual_seed(0)
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(shape.meta.config, dtype=dtype).eval().requires_grad_(False)
    pairs = [ScoringPair(r.prompt, r.target_new) for r in records] * 40
    tokens = sum(len(tokenizer(p.prompt + " " + p.target)["input_ids"]) for p in pairs[:100]) // 100
    run = RunShape(edits=10, batch_size=10, scored_records=len(pairs), pairs_per_record=1, tokens_per_record=tokens,
                   generated=False)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out: list[CostCheck | str] = []
    probe = HFProbe(model, tokenizer, device)
    probe.score(pairs[:20])
    with PeakMemory(device) as meter:
        probe.score(pairs)
    out.append(CostCheck(shape.label, "evaluation", weights + meter.peak,
                         weights + evaluation_cost(shape, run).transient_bytes))
    corpus = [" ".join(sentences[i:i + 60]) for i in range(0, 40 * 60, 60)]
    params = {**PARAMS, "mend": {"max_steps": "0", "max_train_records": "20"},
              **{name: {**PARAMS[name], "stats_corpus": "task"} for name in ("memit", "alphaedit")}}
    with tempfile.TemporaryDirectory() as scratch:
        for label in methods:
            ref = MethodRef.parse(label)
            try:
                with PeakMemory(device) as meter:
                    ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=device,
                                      cache_dir=Path(scratch) / label, task=_Corpus(corpus), seed=0,  # type: ignore[arg-type]
                                      generator=torch.Generator(), train_records=lambda: records[60:])
                    method = ref.cls(ref.config(params, shape.architecture), ctx)
                    method.prepare()
                    method.apply(records[:10])
                    del method, ctx
            except Exception as exc:  # noqa: BLE001  (reported, and the next method runs)
                out.append(f"{shape.label} {label}: {type(exc).__name__}: {exc}")
                continue
            cost = plan_methods(shape, run, [label], params)[0].cost
            assert cost is not None
            planned = max(cost.peak(p) for p in cost.phases if p.phase != "evaluation")
            out.append(CostCheck(shape.label, label, weights + meter.peak, planned))
    return out
