"""Protocols: how a number was obtained, named, so that it is compared only with numbers obtained
the same way.

In lifelong editing the protocol moves a method's score as much as the method does: RLEdit's ZsRE
efficacy on Llama-3-8B is reported near 91 in turns of 100 edits and near 81 at one edit per turn;
teacher-forced token accuracy against generated answers takes single-edit success from 96.8% to
38.5% ("The Mirage of Model Editing", ACL 2025). A :class:`Protocol` records the choices that make
those differences (edits per turn, when scoring happens, which scoring rule is the headline, the
locality reference, the prompt format), every run stores the one it ran under (with whatever the
user changed, :attr:`Protocol.modified`), and the leaderboard ranks runs only within one
(:meth:`Protocol.board_key`).

Cards (:data:`PROTOCOLS`) are the published setups, each with its citation and the numbers its
paper reports (:class:`Published`), so that a report can put a measured number beside the
published one. This module imports neither torch nor anything above ``core``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .prompts import PROMPT_FORMATS

#: when a run is scored: the 1-2-5 ladder of edit counts up to the end, the end alone, or the
#: edit counts a run chose (``--checkpoints``); every one of them includes the end
SCORING_TIMES = ("ladder", "end", "chosen")
#: generated-answer rules (``harness/evaluation/generated.py`` implements each); "off": none
GENERATION_RULES = ("editbench", "wild", "off")
#: which score family is the headline of a board
HEADLINES = ("teacher-forced", "generated")
#: the locality reference: agreement with the unedited model, or accuracy against the dataset's
#: answers (both are stored; this names the one a board leads with)
LOCALITY_REFERENCES = ("agree", "answers")

#: the fields that decide whether two numbers at the same edit count are comparable; the others
#: (when scoring happens, the card's default edit count) change what is measured, not its value
COMPARABLE = ("edits_per_turn", "method_params", "generation", "answer_tokens", "headline",
              "locality", "prompt_format")


@dataclass(frozen=True)
class Published:
    """One number a paper reports for a card's setup, in [0, 1] like every stored score."""

    model: str  # as the paper names it, with the hub id where the paper or release gives one
    task: str  # editbench's task name (zsre, counterfact, fever, wikibigedit, ...)
    method: str  # editbench's method name
    edits: int
    metric: str  # editbench's metric key it corresponds to (efficacy_acc, specificity_acc, ...)
    value: float
    source: str  # "Table 1" of the card's paper
    paper_metric: str = ""  # what the paper calls it, where that differs

    def matches_model(self, model: str) -> bool:
        """A run's model is this number's when its hub id or its folder's name is the paper's (a
        local copy of ``meta-llama/Meta-Llama-3-8B-Instruct`` named ``Meta-Llama-3-8B-Instruct``
        counts)."""
        def tail(text: str) -> str:
            return text.rstrip("/").rsplit("/", 1)[-1].lower()
        return model == self.model or tail(model) == tail(self.model)


@dataclass(frozen=True)
class Protocol:
    """A named way of running and scoring lifelong editing (a card), or a card as a run changed
    it (:attr:`modified` then lists what was changed)."""

    name: str
    title: str
    #: edits applied per turn (``--batch-size``)
    edits_per_turn: int
    #: when the run is scored (``ladder`` or ``end``; ``--checkpoints`` overrides)
    scoring_at: str = "ladder"
    #: the generated-answer rule (``--gen-rule``; ``off`` scores teacher-forced only)
    generation: str = "editbench"
    #: new tokens an answer may take under the rule (``--gen-max-tokens``; None: the rule's own)
    answer_tokens: int | None = None
    #: the score family the board leads with
    headline: str = "teacher-forced"
    locality: str = "agree"
    prompt_format: str = "raw"
    #: method settings the card's releases fix, under anything set by ``--param`` (a method's
    #: sub-batch, where its release solves a turn in sub-batches)
    method_params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the card's stream length, the default for ``--edits`` (None: the task's default)
    edits: int | None = None
    #: the tasks the card was published on (a run on another task is still under the card)
    tasks: tuple[str, ...] = ()
    citation: str = ""
    url: str = ""
    notes: str = ""
    published: tuple[Published, ...] = ()
    #: what a run changed from the card: (field, value as text), in field order
    modified: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, allowed in (("scoring_at", SCORING_TIMES), ("generation", GENERATION_RULES),
                              ("headline", HEADLINES), ("locality", LOCALITY_REFERENCES),
                              ("prompt_format", PROMPT_FORMATS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"protocol {self.name}: {name} {getattr(self, name)!r} is not "
                                 f"one of {', '.join(allowed)}")
        if self.edits_per_turn < 1:
            raise ValueError(f"protocol {self.name}: edits_per_turn must be at least 1")
        if self.headline == "generated" and self.generation == "off":
            raise ValueError(f"protocol {self.name}: a generated headline needs a generation rule")

    @property
    def label(self) -> str:
        """``ultraedit``, or ``ultraedit*`` when a run changed it."""
        return self.name + ("*" if self.modified else "")

    def describe(self) -> str:
        """One line for a table's caption: the card and what it fixes."""
        parts = [f"{self.edits_per_turn} edit{'s' if self.edits_per_turn != 1 else ''} per turn",
                 {"end": "scored at the end", "ladder": "scored on a 1-2-5 ladder",
                  "chosen": "scored at chosen edit counts"}[self.scoring_at],
                 f"{self.headline} headline",
                 f"generated rule {self.generation}" if self.generation != "off"
                 else "no generated scoring",
                 "locality: agreement with the unedited model" if self.locality == "agree"
                 else "locality: accuracy against the dataset's answers",
                 f"prompt {self.prompt_format}"]
        changed = (" (changed: " + ", ".join(f"{k}={v}" for k, v in self.modified) + ")"
                   if self.modified else "")
        return f"{self.label}: " + "; ".join(parts) + changed

    def headline_metrics(self) -> tuple[str, ...]:
        """The stored metrics this protocol leads with: efficacy, generalization and locality of
        its headline family, locality by its reference."""
        if self.headline == "generated":
            return ("efficacy_gen_em", "generalization_gen_em", "specificity_gen_agree")
        return ("efficacy_acc", "generalization_acc",
                "specificity_agree" if self.locality == "agree" else "specificity_acc")

    def record(self) -> dict[str, Any]:
        """What a run stores (its config, hence its id): the card's name and every field a number
        depends on, with what was changed; not the citation or the published numbers."""
        data = {"name": self.name, "edits_per_turn": self.edits_per_turn,
                "scoring_at": self.scoring_at, "generation": self.generation,
                "answer_tokens": self.answer_tokens,
                "headline": self.headline, "locality": self.locality,
                "prompt_format": self.prompt_format,
                "method_params": {m: dict(p) for m, p in sorted(self.method_params.items())}}
        if self.modified:
            data["modified"] = [list(item) for item in self.modified]
        return data

    def board_key(self) -> str:
        """Runs with equal keys are ranked together: the card's name and the fields that decide
        comparability (:data:`COMPARABLE`)."""
        record = self.record()
        return json.dumps({"name": self.name, **{k: record[k] for k in COMPARABLE
                                                  if k in record}}, sort_keys=True)

    def published_for(self, model: str, task: str, method: str) -> list[Published]:
        """The card's published numbers for a run's model, task and method."""
        return [p for p in self.published
                if p.task == task and p.method == method and p.matches_model(model)]


def from_record(data: Mapping[str, Any] | None, batch_size: int | None = None) -> Protocol:
    """The protocol a stored run ran under. A run stored before protocols existed ran editbench's
    default protocol with its own turn size (changed where that was not 10)."""
    if not data:
        base = PROTOCOLS["editbench"]
        if batch_size is None or batch_size == base.edits_per_turn:
            return base
        return replace(base, edits_per_turn=int(batch_size),
                       modified=(("edits_per_turn", str(batch_size)),))
    known = {f.name for f in fields(Protocol)}
    values = {k: v for k, v in data.items() if k in known and k != "modified"}
    card = PROTOCOLS.get(str(values.get("name", "")))
    modified = tuple(tuple(item) for item in data.get("modified", ()))
    if card is not None:
        return replace(card, **values, modified=modified)
    return Protocol(title=str(values.get("name", "unknown")), **values, modified=modified)


# -- the cards ---------------------------------------------------------------------------------
def _cards(*cards: Protocol) -> dict[str, Protocol]:
    return {card.name: card for card in cards}


EDITBENCH = Protocol(
    name="editbench",
    title="editbench's default: turns of 10, a ladder of checkpoints, both scoring families",
    edits_per_turn=10,
    notes="Teacher-forced token accuracy is the headline; generated answers are scored beside it "
          "with editbench's rule (greedy, stop at a newline or end of sequence, at most the "
          "target's length plus three tokens, outer punctuation and articles ignored).",
)

def _numbers(model: str, task: str, edits: int, source: str, metrics: Mapping[str, str],
             rows: Mapping[str, tuple[float, ...]], scale: float = 100.0) -> tuple[Published, ...]:
    """A paper table's rows (method -> values in the order of ``metrics``, editbench's key ->
    the paper's name) as :class:`Published` numbers in [0, 1]."""
    return tuple(Published(model, task, method, edits, key, value / scale, source, name)
                 for method, values in rows.items()
                 for (key, name), value in zip(metrics.items(), values, strict=True))


_ZSRE_TF = {"efficacy_acc": "ZsRE Eff.", "generalization_acc": "ZsRE Gen.",
            "specificity_acc": "ZsRE Spe."}
_CF_PROB = {"efficacy_success": "Counterfact Eff.", "generalization_success": "Counterfact Gen.",
            "specificity_success": "Counterfact Spe."}
_ALPHAEDIT_TABLE = "AlphaEdit (ICLR 2025) Table 1"
#: AlphaEdit Table 1 (2,000 edits in turns of 100), the methods editbench has: Counterfact's
#: efficacy, generalization, specificity, then ZsRE's (in %)
_ALPHAEDIT_ROWS = {
    "meta-llama/Meta-Llama-3-8B-Instruct": {
        "mend": (63.24, 61.17, 45.37, 0.91, 1.09, 0.53),
        "memit": (65.65, 64.65, 51.56, 34.62, 31.28, 18.49),
        "alphaedit": (98.90, 94.22, 67.88, 94.47, 91.13, 32.55)},
    "EleutherAI/gpt-j-6B": {
        "mend": (46.15, 46.22, 53.90, 0.71, 0.71, 0.52),
        "memit": (98.55, 95.50, 63.64, 94.91, 90.22, 30.39),
        "alphaedit": (99.75, 96.38, 75.48, 99.79, 96.00, 28.29)},
    "gpt2-xl": {
        "mend": (50.80, 50.80, 49.20, 0.00, 0.00, 0.00),
        "memit": (94.70, 85.82, 60.50, 79.17, 71.44, 26.42),
        "alphaedit": (99.50, 93.95, 66.39, 94.81, 86.11, 25.88)},
}
_ALPHAEDIT_PUBLISHED = tuple(
    number for model, rows in _ALPHAEDIT_ROWS.items()
    for number in (_numbers(model, "counterfact", 2000, _ALPHAEDIT_TABLE, _CF_PROB,
                            {m: v[:3] for m, v in rows.items()})
                   + _numbers(model, "zsre", 2000, _ALPHAEDIT_TABLE, _ZSRE_TF,
                              {m: v[3:] for m, v in rows.items()})))

#: "The Mirage of Model Editing" (ACL 2025) Table 14: 1,000 edits, one per turn, WILD reliability
#: and locality (its primary metric is an LLM judge; editbench's nearest is exact match)
_WILD_METRICS = {"efficacy_gen_em": "Rel. WILD (LLM judge)",
                 "specificity_gen_agree": "Loc. WILD (pre-edit output kept)"}
_WILD_ROWS = {
    ("meta-llama/Llama-2-7b-chat-hf", "zsre"): {
        "ft-m": (0.517, 0.036), "mend": (0.000, 0.000), "memit": (0.000, 0.000),
        "grace": (0.025, 1.000), "wise": (0.215, 1.000)},
    ("mistralai/Mistral-7B-v0.1", "zsre"): {
        "ft-m": (0.465, 0.187), "mend": (0.000, 0.000), "memit": (0.000, 0.000),
        "grace": (0.031, 1.000), "wise": (0.017, 0.970)},
    ("Llama-3-8b", "zsre"): {
        "ft-m": (0.013, 0.001), "memit": (0.000, 0.000), "grace": (0.033, 1.000),
        "wise": (0.098, 1.000)},
    ("meta-llama/Llama-2-7b-chat-hf", "counterfact"): {
        "ft-m": (0.592, 0.041), "mend": (0.000, 0.006), "memit": (0.000, 0.000),
        "grace": (0.017, 1.000), "wise": (0.296, 0.522)},
    ("mistralai/Mistral-7B-v0.1", "counterfact"): {
        "ft-m": (0.538, 0.049), "mend": (0.000, 0.000), "memit": (0.000, 0.000),
        "grace": (0.006, 1.000), "wise": (0.119, 0.081)},
    ("Llama-3-8b", "counterfact"): {
        "ft-m": (0.080, 0.003), "memit": (0.000, 0.000), "grace": (0.006, 1.000),
        "wise": (0.027, 0.912)},
}
_WILD_PUBLISHED = tuple(
    number for (model, task), rows in _WILD_ROWS.items()
    for number in _numbers(model, task, 1000, "The Mirage of Model Editing (ACL 2025) Table 14",
                           _WILD_METRICS, rows, scale=1.0))

RLEDIT = Protocol(
    name="rledit",
    title="RLEdit's release: 400 turns of 20 edits, scored once at the end, teacher-forced",
    edits_per_turn=20, edits=8000, scoring_at="end", locality="answers",
    tasks=("zsre", "fever", "counterfact"),
    citation="Li et al., Reinforced Lifelong Editing for Language Models, ICML 2025 "
             "(arXiv 2502.05759); turns from its release, zhrli324/RLEdit c6576a1 "
             "config/dataset/zsre.yaml (n_edits 20) and config/config.yaml (num_seq 400)",
    url="https://arxiv.org/abs/2502.05759",
    notes="The release scores every edit once after the last turn (editor/base.py:258-312), by "
          "teacher-forced token accuracy, ZsRE's locality against the dataset's answer "
          "(data/zsre.py:14-20). The rledit@release, malmen@rledit-release and "
          "mend@rledit-release presets carry its method settings. The paper's tables are not "
          "yet transcribed here: no published numbers on this card.",
)

ULTRAEDIT = Protocol(
    name="ultraedit",
    title="UltraEdit's setup: 20,000 edits in turns of 100 (sub-batches of 10), teacher-forced, "
          "locality against the dataset's answers",
    edits_per_turn=100, edits=20000, scoring_at="end", locality="answers",
    method_params={"ultraedit": {"sub_batch": "10"}},
    tasks=("zsre", "fever", "wikibigedit"),
    citation="Gu et al., UltraEdit: Training-, Subject-, and Memory-Free Lifelong Editing in "
             "Language Models, TMLR (arXiv 2505.14679); turns from its release, "
             "XiaojieGu/UltraEdit 0beb222 run.sh and config/dataset/*.yaml (n_edits 100, "
             "num_seq 200, batch_size 10)",
    url="https://arxiv.org/abs/2505.14679",
    notes="WikiBigEdit runs 170 turns (17,000 edits) in the release. The paper's tables are not "
          "yet transcribed here (the figures quoted for RLEdit, 91.3, and AlphaEdit, 74.3, on "
          "Llama-3-8B-Instruct ZsRE come from a secondary transcription): no published numbers "
          "on this card.",
)

ALPHAEDIT = Protocol(
    name="alphaedit",
    title="AlphaEdit's Table 1: 2,000 edits in turns of 100, scored once at the end",
    edits_per_turn=100, edits=2000, scoring_at="end", locality="answers",
    tasks=("counterfact", "zsre"),
    citation="Fang et al., AlphaEdit: Null-Space Constrained Knowledge Editing for Language "
             "Models, ICLR 2025 (arXiv 2410.02355), Table 1",
    url="https://arxiv.org/abs/2410.02355",
    notes="ZsRE: teacher-forced top-1 token accuracy, specificity against the dataset's locality "
          "answer in the release (dsets/zsre.py:35-49). Counterfact: probability comparisons "
          "(editbench's counterfact task's *_success metrics). The release also compresses large "
          "singular values of the accumulated update at the last turn "
          "(experiments/evaluate.py:303-325), which the paper does not describe.",
    published=_ALPHAEDIT_PUBLISHED,
)

WILD = Protocol(
    name="wild",
    title="QAEdit's WILD evaluation: one edit per turn, generated answers scored at the end",
    edits_per_turn=1, edits=1000, scoring_at="end", generation="wild", answer_tokens=50,
    headline="generated", locality="agree",
    tasks=("zsre", "counterfact"),
    citation="Yang et al., The Mirage of Model Editing: Revisiting Evaluation in the Wild, "
             "ACL 2025 (arXiv 2502.11177v5), Tables 3, 9 and 14; release "
             "WanliYoung/Revisit-Editing-Evaluation 61ccca3",
    url="https://aclanthology.org/2025.acl-long.745/",
    notes="Greedy, at most 50 new tokens, stop at '.', a newline or end of sequence "
          "(evaluate_utils.py:117-143); the paper's headline is an LLM judge (gpt-4o-mini), its "
          "exact-match variant (WILD-em: lower case, punctuation and articles removed, :18-35) is "
          "what editbench computes. Locality: the edited model's answer equals the unedited "
          "model's (editor.py:251-256; editbench compares normalised texts). The release's "
          "default input is the bare question (edit.py:27); the paper's context-guided input is "
          "--prompt-format qa.",
    published=_WILD_PUBLISHED,
)

LOCFT_BF = Protocol(
    name="locft-bf",
    title="LocFT-BF's evaluation: every edit in one fine-tuning call, greedy answers of up to 32 "
          "tokens, exact match",
    edits_per_turn=3000, edits=3000, scoring_at="end", generation="wild", answer_tokens=32,
    headline="generated",
    tasks=("zsre", "counterfact", "wikibigedit"),
    citation="Yang et al., Fine-tuning Done Right in Model Editing, ICLR 2026 (arXiv 2509.22072); "
             "release ICT-STAR/LocFT 51db785 main_exp.sh and eval_edit_metric.py",
    url="https://arxiv.org/abs/2509.22072",
    notes="The release fine-tunes on a whole 3,000-edit file at once and scores by vLLM greedy "
          "decoding, at most 32 tokens, stop at '.', a newline or end of sequence, exact match "
          "after lower case and removing punctuation and articles (eval_edit_metric.py:16-33, "
          "77-81); it scores no locality. The paper's tables are not yet transcribed here: no "
          "published numbers on this card.",
)

PROTOCOLS: dict[str, Protocol] = _cards(EDITBENCH, RLEDIT, ULTRAEDIT, ALPHAEDIT, WILD, LOCFT_BF)


def card(name: str) -> Protocol:
    """A card by name; an unknown one is one line listing the cards."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"--protocol {name!r}: no such protocol; known: "
                         f"{', '.join(PROTOCOLS)} (editbench list --protocols)") from None


def with_changes(base: Protocol, **changes: Any) -> Protocol:
    """``base`` with ``changes`` applied, each one that differs from the card recorded in
    :attr:`Protocol.modified` (field order)."""
    differs = {k: v for k, v in changes.items() if v is not None and getattr(base, k) != v}
    if not differs:
        return base
    order = [f.name for f in fields(Protocol)]
    modified = tuple((k, _text(differs[k])) for k in sorted(differs, key=order.index))
    return replace(base, **differs, modified=modified)


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return json.dumps({k: dict(v) if isinstance(v, Mapping) else v
                           for k, v in value.items()}, sort_keys=True)
    return str(value)
