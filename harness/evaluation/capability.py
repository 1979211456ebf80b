"""General capability after editing: few-shot GLUE-style and MMLU question sets.

Editing thousands of facts can damage what a model could already do. Following Gu et al. (2024)
and the RLEdit authors, editbench asks the model SST-2, MRPC, CoLA, RTE, NLI and MMLU questions
with a few solved examples in front, compares the log-probability of each answer's tokens, and
reports accuracy at chosen checkpoints next to the unedited model's.

Data: ``--capability-data DIR`` holding ``NAME.json`` or ``NAME.jsonl`` in the field layout of the
RLEdit authors' subsets (sst2/cola: sentence, label; mrpc/rte: sentence1, sentence2, label; nli:
sentence1, sentence2, label "entailment"/"not_entailment"; mmlu: question, choices, answer), or,
without it, the Hugging Face datasets named in ``HUB_SOURCES``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...core.probe import ProbeBackend
from ...core.records import ScoringPair

Example = tuple[str, list[str], int]  # (query, answer choices, index of the right one)


def _sst2(r: dict) -> Example:
    return f"Review: {r['sentence'].strip()}\nSentiment:", ["negative", "positive"], int(r["label"])


def _cola(r: dict) -> Example:
    return (f"Sentence: {r['sentence'].strip()}\nIs this sentence grammatical?\nAnswer:",
            ["No", "Yes"], int(r["label"]))


def _mrpc(r: dict) -> Example:
    query = (f"Sentence 1: {r['sentence1'].strip()}\nSentence 2: {r['sentence2'].strip()}\n"
             "Do both sentences mean the same thing?\nAnswer:")
    return query, ["No", "Yes"], int(r["label"])


def _entailment(r: dict) -> Example:
    label = r["label"]
    # GLUE: 0 = entailment
    gold = (0 if label == "entailment" else 1) if isinstance(label, str) else int(label)
    return (f"{r['sentence1'].strip()}\nQuestion: {r['sentence2'].strip()} True or False?\nAnswer:",
            ["True", "False"], gold)


def _mmlu(r: dict) -> Example:
    letters = "ABCD"
    options = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(r["choices"]))
    return (f"{r['question'].strip()}\n{options}\nAnswer:", list(letters[: len(r["choices"])]),
            int(r["answer"]))


CAPABILITY_SETS: dict[str, Callable[[dict], Example]] = {
    "sst2": _sst2, "mrpc": _mrpc, "cola": _cola, "rte": _entailment, "nli": _entailment,
    "mmlu": _mmlu,
}
HUB_SOURCES: dict[str, str] = {
    "sst2": "nyu-mll/glue/sst2:validation", "mrpc": "nyu-mll/glue/mrpc:validation",
    "cola": "nyu-mll/glue/cola:validation", "rte": "nyu-mll/glue/rte:validation",
    "mmlu": "cais/mmlu/all:test",
}


@dataclass(frozen=True)
class CapabilitySettings:
    sets: tuple[str, ...]
    data: str | None = None  # folder of NAME.json(l) files; None: the hub
    limit: int = 100  # questions per set
    shots: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [name for name in self.sets if name not in CAPABILITY_SETS]
        if unknown:
            raise ValueError(f"--capability: unknown set {unknown[0]!r}; "
                             f"known: {', '.join(CAPABILITY_SETS)}")
        if self.limit < 1 or self.shots < 0:
            raise ValueError("--capability-limit must be at least 1")


def _load_raw(name: str, settings: CapabilitySettings) -> tuple[str, list[dict]]:
    from ...core.sources import read_json_records

    if settings.data is not None:
        folder = Path(settings.data)
        for suffix in (".json", ".jsonl"):
            if (folder / f"{name}{suffix}").is_file():
                path = folder / f"{name}{suffix}"
                return str(path), read_json_records(path)
        raise FileNotFoundError(f"--capability-data {folder}: no {name}.json or {name}.jsonl there")
    if name not in HUB_SOURCES:
        raise FileNotFoundError(f"--capability {name}: no hub source is known; "
                                f"pass --capability-data DIR with {name}.json")
    ident, _, split = HUB_SOURCES[name].partition(":")
    owner, dataset, config = ident.split("/")
    import datasets  # only reached without local data

    return ident, [dict(r)
                   for r in datasets.load_dataset(f"{owner}/{dataset}", config, split=split)]


@dataclass(frozen=True)
class CapabilitySet:
    name: str
    shots_text: str
    questions: list[Example]


def load_capability_sets(settings: CapabilitySettings) -> list[CapabilitySet]:
    """Seeded choice of few-shot examples and questions; the shots are never asked."""
    sets = []
    for name in settings.sets:
        source, raw = _load_raw(name, settings)
        try:
            examples = [CAPABILITY_SETS[name](r) for r in raw]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: records do not have the {name} field layout "
                             f"({exc!r})") from None
        order = list(range(len(examples)))
        random.Random(f"{settings.seed}-{name}").shuffle(order)
        shots = [examples[i] for i in order[: settings.shots]]
        questions = [examples[i] for i in order[settings.shots : settings.shots + settings.limit]]
        shots_text = "".join(f"{q} {choices[gold]}\n\n" for q, choices, gold in shots)
        sets.append(CapabilitySet(name, shots_text, questions))
    return sets


def capability_accuracy(probe: ProbeBackend,
                        sets: Sequence[CapabilitySet]) -> dict[str, tuple[int, float]]:
    """set name -> (questions asked, accuracy), answer picked by the highest answer
    log-probability."""
    pairs, spans = [], []
    for question_set in sets:
        for query, choices, gold in question_set.questions:
            spans.append((question_set.name, len(pairs), len(choices), gold))
            pairs.extend(ScoringPair(question_set.shots_text + query, choice) for choice in choices)
    scores = probe.score(pairs)
    correct: dict[str, list[bool]] = {s.name: [] for s in sets}
    for name, start, n, gold in spans:
        logprobs = [scores[start + i].logprob for i in range(n)]
        correct[name].append(max(range(n), key=logprobs.__getitem__) == gold)
    return {name: (len(hits), sum(hits) / len(hits) if hits else 0.0)
            for name, hits in correct.items()}
