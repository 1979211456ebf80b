"""Does the vLLM probe backend see what the Hugging Face backend sees, before and after weight
syncs?

The failures this looks for are silent: a sync that never reaches the engine's model (scores stay
those of the base checkpoint), a restore that is not sent (the next method is scored with the
previous one's edits), and keys and values cached under old weights (prefix caching) that make
generation after a sync continue from the previous checkpoint. So the prompts share a prefix longer
than two KV blocks (a cache would hold whole blocks of it) and every phase is compared with the HF
backend scoring the live model:

a. the base model;
b. after a sync of edited tensors (and the engine must then score differently from a, or the sync
   did not arrive);
c. after a second sync that restores the original tensors (the engine must then score as in a);
d. greedy generation (``generate`` at top-k 1 and ``generate_answers``) in each of a, b and c,
   generation first in a, so that a cache written there would be read in b.

:func:`vllm_parity` returns a :class:`ParityReport` that the GPU test asserts on and that
``editbench selfcheck`` prints. It needs vLLM and a CUDA GPU for a real engine; its tests also run
it on CPU against a stand-in ``vllm`` module (``tests/test_vllm_backend.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core.models import ModelLayout, load_model
from ...core.probe import GenerationSettings, HFProbe
from ...core.probe_vllm import KV_BLOCK, VLLMProbe, engine_length
from ...core.records import ScoringPair

#: Summed log-probabilities of a pair may differ by this much (float32 on both sides; paged
#: attention and eager attention add in different orders).
LOGPROB_TOLERANCE = 2e-3

#: Share of greedy generations that must be the same text (a near tie between two tokens can
#: still break differently under other kernels).
GENERATION_AGREEMENT = 0.9

SHARED_PREFIX = ("In the valley of the river the old town keeps its market, its bridge and its "
                 "tower, and")
SUBJECTS = ("the miller", "the baker", "the smith", "the weaver", "the fisher", "the potter",
            "the mason", "the tanner")
TARGETS = ("lives by the gate", "sells bread", "works the iron", "weaves the cloth")
NEW_TOKENS = 8


@dataclass(frozen=True)
class Phase:
    """One comparison of the two backends."""

    name: str
    max_logprob_diff: float  # largest |HF - vLLM| summed log-probability over the pairs
    predictions_agree: int  # pairs whose argmax tokens are all the same
    generations_agree: int  # prompts whose greedy continuation is the same text (``generate``)
    answers_agree: int  # pairs whose greedy answer is the same text (``generate_answers``)
    pairs: int


@dataclass
class ParityReport:
    vllm_version: str
    device: str
    prompt_tokens: tuple[int, int]  # shortest and longest scored text, in tokens
    shared_prefix_tokens: int
    phases: list[Phase] = field(default_factory=list)
    edit_moved_engine: float = 0.0  # largest change of an engine score from phase a to b
    restore_diff: float = 0.0  # largest difference of an engine score between phases a and c

    def problems(self, tolerance: float = LOGPROB_TOLERANCE,
                 agreement: float = GENERATION_AGREEMENT) -> list[str]:
        """What is wrong, one line each; empty when the backends agree."""
        found = []
        if self.shared_prefix_tokens <= 2 * KV_BLOCK:
            found.append(f"the shared prefix is {self.shared_prefix_tokens} tokens, "
                         "not more than two KV blocks")
        for phase in self.phases:
            if phase.max_logprob_diff > tolerance:
                found.append(f"{phase.name}: log-probabilities differ by "
                             f"{phase.max_logprob_diff:.2e} > {tolerance:g}")
            if phase.predictions_agree < phase.pairs:
                found.append(f"{phase.name}: argmax tokens differ on "
                             f"{phase.pairs - phase.predictions_agree} pairs")
            for what, agree in (("generate", phase.generations_agree),
                                ("generate_answers", phase.answers_agree)):
                if agree < agreement * phase.pairs:
                    found.append(f"{phase.name}: {what} gives the same text on only "
                                 f"{agree}/{phase.pairs}")
        if self.edit_moved_engine <= tolerance:
            found.append("the edit sync did not change the engine's scores: "
                         "it never reached the engine's model")
        if self.restore_diff > tolerance:
            found.append("after the restoring sync the engine scores differ from the base by "
                         f"{self.restore_diff:.2e}")
        return found

    def lines(self) -> list[str]:
        """The report as ``selfcheck`` prints it."""
        out = [f"vLLM {self.vllm_version} on {self.device}: prompts of "
               f"{self.prompt_tokens[0]}-{self.prompt_tokens[1]} "
               f"tokens sharing a {self.shared_prefix_tokens}-token prefix"]
        out += [f"  {p.name}: max |logprob diff| {p.max_logprob_diff:.2e}, "
                f"argmax {p.predictions_agree}/{p.pairs}, "
                f"generate {p.generations_agree}/{p.pairs}, answers {p.answers_agree}/{p.pairs}"
                for p in self.phases]
        out.append(f"  edit moved the engine's scores by up to {self.edit_moved_engine:.3g}; "
                   f"after the restore they differ from the base by {self.restore_diff:.2e}")
        problems = self.problems()
        out.append("  parity: ok" if not problems else "  parity FAILED: " + "; ".join(problems))
        return out


def parity_pairs(tokenizer) -> tuple[list[ScoringPair], int]:
    """Pairs whose prompts share a prefix of more than two KV blocks, and that prefix's length."""
    prefix = SHARED_PREFIX
    while len(tokenizer(prefix)["input_ids"]) <= 2 * KV_BLOCK + 4:
        prefix = f"{prefix} {SHARED_PREFIX}"
    pairs = [ScoringPair(f"{prefix} {subject}", target)
             for subject in SUBJECTS for target in TARGETS[:2]]
    return pairs, len(tokenizer(prefix)["input_ids"])


def edit_tensors(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Change every layer's MLP output matrix by seeded noise as large as its own spread (enough to
    move every score); returns the original values."""
    layout = ModelLayout.of(model)
    generator = torch.Generator().manual_seed(seed)
    originals = {}
    with torch.no_grad():
        for layer in range(layout.n_layers):
            name = f"{layout.mlp_out_name(layer)}.weight"
            weight = model.get_parameter(name)
            originals[name] = weight.detach().clone()
            noise = torch.randn(weight.shape, generator=generator).to(weight.device, weight.dtype)
            weight.add_(noise * weight.float().std().to(weight.dtype))
    return originals


def _compare(name: str, hf: HFProbe, engine: VLLMProbe,
             pairs: list[ScoringPair]) -> tuple[Phase, list[float]]:
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, top_k=1)
    # generation first: after a sync it would read a prefix cache that the previous phase wrote
    prompts = [p.prompt for p in pairs]
    generated = zip(hf.generate(prompts, settings), engine.generate(prompts, settings), strict=True)
    answers = zip(hf.generate_answers(pairs, NEW_TOKENS),
                  engine.generate_answers(pairs, NEW_TOKENS), strict=True)
    hf_scores, engine_scores = hf.score(pairs), engine.score(pairs)
    phase = Phase(
        name=name,
        max_logprob_diff=max(abs(a.logprob - b.logprob)
                             for a, b in zip(hf_scores, engine_scores, strict=True)),
        predictions_agree=sum(a.predictions == b.predictions
                              for a, b in zip(hf_scores, engine_scores, strict=True)),
        generations_agree=sum(a == b for a, b in generated),
        answers_agree=sum(a == b for a, b in answers),
        pairs=len(pairs),
    )
    return phase, [s.logprob for s in engine_scores]


def vllm_parity(model_source: str | Path, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32,
                gpu_memory_utilization: float = 0.3) -> ParityReport:
    """Build both backends on ``model_source`` and compare them through an edit and its restore."""
    device = device or torch.device("cuda")
    model, tokenizer = load_model(model_source, device, dtype)
    pairs, prefix_tokens = parity_pairs(tokenizer)
    lengths = [len(tokenizer(f"{p.prompt} {p.target}")["input_ids"]) for p in pairs]
    hf = HFProbe(model, tokenizer, device)
    engine = VLLMProbe(str(model_source), tokenizer, dtype, gpu_memory_utilization,
                       max_model_len=engine_length(tokenizer,
                                                   [f"{p.prompt} {p.target}" for p in pairs],
                                                   NEW_TOKENS))
    report = ParityReport(engine.version,
                          torch.cuda.get_device_name(device) if device.type == "cuda"
                          else str(device),
                          (min(lengths), max(lengths)), prefix_tokens)
    engine.sync(model, [])
    phase, base = _compare("a. base", hf, engine, pairs)
    report.phases.append(phase)
    originals = edit_tensors(model)
    engine.sync(model, sorted(originals))
    phase, edited = _compare("b. after the edit sync", hf, engine, pairs)
    report.phases.append(phase)
    report.edit_moved_engine = max(abs(a - b) for a, b in zip(base, edited, strict=True))
    with torch.no_grad():
        for name, value in originals.items():
            model.get_parameter(name).copy_(value)
    engine.sync(model, [])  # nothing edited now: the engine must get the originals back
    phase, restored = _compare("c. after the restoring sync", hf, engine, pairs)
    report.phases.append(phase)
    report.restore_diff = max(abs(a - b) for a, b in zip(base, restored, strict=True))
    return report
