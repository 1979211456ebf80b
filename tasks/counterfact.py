"""CounterFact (Meng et al. 2022, ROME) and its scoring as in ROME/MEMIT.

Two file layouts, recognised from each record's keys:

- ROME/MEMIT: ``case_id``, ``requested_rewrite`` {``prompt`` with ``{}``, ``subject``,
  ``target_new.str``, ``target_true.str``}, ``paraphrase_prompts``, ``neighborhood_prompts``,
  ``attribute_prompts``, ``generation_prompts``.
- EasyEdit/KnowEdit flat: ``case_id``, ``prompt`` (subject filled in), ``subject``, ``target_new``,
  ``ground_truth``, ``rephrase_prompt``, ``locality_prompt``, ``locality_ground_truth``.

Beyond the core token-accuracy metrics, each edit is scored as ROME does: *success* (the new
object is more probable than the true one at the edit prompt and paraphrases; the reverse at
neighbourhood prompts) and *magnitude* (the probability difference), with probabilities from the
mean token log-probability. Records in the ROME layout also get fluency (weighted bi/tri-gram
entropy of text generated from ``generation_prompts``) and consistency (TF-IDF cosine between that
text and reference text: the ``attribute_prompts``, about subjects that truly have the new object,
completed with it).

Consistency is computed in one TF-IDF space for every method and checkpoint of a run, with ROME's
tokenisation (scikit-learn's defaults). ROME's space is fixed: its ``idf.npy`` and
``tfidf_vocab.json``, fitted on Wikipedia (``dsets/tfidf_stats.py``), and its references are the
Wikipedia snippets of other subjects with the same relation and new object
(``attribute_snippets.json``, ``eval_utils_counterfact.py:82-83``). ``--param counterfact.idf=SRC``
(a folder or URL prefix holding those two files) and ``--param counterfact.snippets=SRC`` use them;
offline, the space is fitted once per run on the reference texts of all the run's records (never
on generated text, which would put each method on its own scale), and the references are the
attribute prompts completed with the new object. Values with the offline space compare methods of
one run, not with the paper's. Generation settings are part of the task config and stored; ROME
samples up to 100 tokens including the prompt with top-k 5 from every generation prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.metrics import TfIdf, ngram_entropy, prefers
from ..core.probe import GenerationSettings
from ..core.records import EditRecord, Metric, Neighbour, ScoreRow, ScoringPair
from ..core.sources import Fields, Where, local_file, read_json_object
from ..core.task import TASKS
from .filetask import FileTask, FileTaskConfig
from .knowedit import parse_knowedit

METRICS = (
    Metric("efficacy_success", "P(new) > P(true) at the edit prompt (ROME ES)"),
    Metric("efficacy_magnitude", "P(new) - P(true) at the edit prompt (ROME EM)"),
    Metric("generalization_success", "mean over paraphrases of P(new) > P(true) (ROME PS)"),
    Metric("generalization_magnitude", "mean over paraphrases of P(new) - P(true) (ROME PM)"),
    Metric("specificity_success", "mean over neighbourhood prompts of P(true) > P(new) (ROME NS)"),
    Metric("specificity_magnitude",
           "mean over neighbourhood prompts of P(true) - P(new) (ROME NM)"),
    Metric("fluency_ngram_entropy",
           "weighted bi/tri-gram entropy of generated text (ROME fluency; ROME layout only)"),
    Metric("consistency_tfidf",
           "TF-IDF cosine of generated text with reference text on the new object "
           "(ROME layout only)"),
)


@dataclass(frozen=True)
class CounterFactConfig(FileTaskConfig):
    generation: bool = True  # fluency and consistency need generated text; off saves time
    gen_max_new_tokens: int = 50  # ROME generates up to 100 tokens in all
    gen_top_k: int = 5
    gen_prompts: int = 10  # at most this many generation prompts per edit
    #: the TF-IDF space of consistency: "run" (fitted once per run on every record's references) or
    #: a folder or URL prefix with ROME's idf.npy and tfidf_vocab.json
    idf: str = "run"
    #: ROME's attribute_snippets.json (path or URL): Wikipedia references; None: the attribute
    #: prompts
    snippets: str | None = None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@TASKS.register("counterfact")
class CounterFactTask(FileTask):
    name = "counterfact"
    description = ("CounterFact, ROME/MEMIT format or EasyEdit/KnowEdit flat format "
                   "(recognised by keys)")
    Config = CounterFactConfig
    metrics = METRICS
    default_data = "https://rome.baulab.info/data/dsets/counterfact.json"

    def parse(self, obj, where: Where) -> EditRecord:
        fields = Fields(obj, where)
        if fields.has("requested_rewrite"):
            return self._parse_rome(fields, obj, where)
        return self._parse_flat(fields, obj, where)

    @staticmethod
    def _uid(obj, where: Where) -> str:
        return (f"cf-{obj['case_id']}" if isinstance(obj.get("case_id"), int)
                else f"cf-{where.source}#{where.index}")

    def _parse_rome(self, fields: Fields, obj, where: Where) -> EditRecord:
        rewrite = fields.nested("requested_rewrite")
        template, subject = rewrite.subject_template("prompt"), rewrite.str("subject")
        target_true = rewrite.nested("target_true").str("str")
        return EditRecord(
            uid=self._uid(obj, where),
            prompt=template.format(subject),
            subject=subject,
            target_new=rewrite.nested("target_new").str("str"),
            target_true=target_true,
            paraphrases=tuple(fields.str_list("paraphrase_prompts")),
            neighbours=tuple(Neighbour(p, target_true)
                             for p in fields.str_list("neighborhood_prompts")),
            extra={
                "relation_id": obj["requested_rewrite"].get("relation_id"),
                "target_new_id": obj["requested_rewrite"]["target_new"].get("id"),
                "attribute_prompts": (fields.str_list("attribute_prompts")
                                      if fields.has("attribute_prompts") else []),
                "generation_prompts": (fields.str_list("generation_prompts")
                                       if fields.has("generation_prompts") else []),
            },
        )

    def _parse_flat(self, fields: Fields, obj, where: Where) -> EditRecord:
        if (isinstance(obj.get("locality"), dict) or isinstance(obj.get("portability"), dict)
                or fields.has("rephrase")):
            return parse_knowedit(obj, where, self._uid(obj, where))  # KnowEdit's nested layout
        prompt, subject = fields.str("prompt"), fields.str("subject")
        neighbours = ()
        if fields.has("locality_prompt"):
            neighbours = (Neighbour(fields.str("locality_prompt"),
                                    fields.str("locality_ground_truth")),)
        return EditRecord(
            uid=self._uid(obj, where),
            prompt=prompt,
            subject=subject,
            target_new=fields.str("target_new"),
            target_true=fields.str("ground_truth"),
            paraphrases=(tuple(fields.str_list("rephrase_prompt", allow_str=True))
                         if fields.has("rephrase_prompt") else ()),
            neighbours=neighbours,
        )

    # -- scoring -----------------------------------------------------------------------------------
    def __init__(self, options, config=None) -> None:
        super().__init__(options, config)
        self._loaded: dict[str, object] = {}  # the snippets and the TF-IDF space, read once per run

    def extra_metrics(self, probe, records: list[EditRecord],
                      positions: list[int]) -> list[ScoreRow]:
        chosen = [(p, records[p]) for p in positions if records[p].target_true]
        rows = self._probability_metrics(probe, chosen)
        config: CounterFactConfig = self.config  # type: ignore[assignment]
        with_generation = [(p, r) for p, r in chosen if r.extra.get("generation_prompts")]
        if config.generation and with_generation:
            rows += self._generation_metrics(probe, with_generation, config)
        return rows

    @staticmethod
    def _probability_metrics(probe, chosen: list[tuple[int, EditRecord]]) -> list[ScoreRow]:
        pairs: list[ScoringPair] = []
        for _, record in chosen:
            for prompt in (record.prompt, *record.paraphrases,
                           *(n.prompt for n in record.neighbours)):
                pairs += [ScoringPair(prompt, record.target_new),
                          ScoringPair(prompt, record.target_true)]
        scores = iter(probe.score(pairs))
        rows = []
        for position, record in chosen:
            def take(n: int, swap: bool = False) -> list[tuple[float, float]]:
                out = []
                for _ in range(n):
                    new, true = next(scores), next(scores)
                    out.append(prefers(true, new) if swap else prefers(new, true))
                return out

            groups = {"efficacy": take(1), "generalization": take(len(record.paraphrases)),
                      "specificity": take(len(record.neighbours), swap=True)}
            for name, results in groups.items():
                if results:
                    rows.append(ScoreRow(position, record.uid, f"{name}_success",
                                         _mean([s for s, _ in results])))
                    rows.append(ScoreRow(position, record.uid, f"{name}_magnitude",
                                         _mean([m for _, m in results])))
        return rows

    def _generation_metrics(self, probe, chosen, config: CounterFactConfig) -> list[ScoreRow]:
        settings = GenerationSettings(config.gen_max_new_tokens, config.gen_top_k)
        prompts = [r.extra["generation_prompts"][: config.gen_prompts] for _, r in chosen]
        texts = probe.generate([p for group in prompts for p in group], settings)
        generated, start = [], 0
        for group in prompts:
            generated.append(texts[start : start + len(group)])
            start += len(group)
        space = self._tfidf_space()
        rows = []
        for (position, record), gen in zip(chosen, generated, strict=True):
            rows.append(ScoreRow(position, record.uid, "fluency_ngram_entropy",
                                 _mean([ngram_entropy(t) for t in gen])))
            references = self._references(record)
            if references:
                rows.append(ScoreRow(position, record.uid, "consistency_tfidf",
                                     TfIdf.cosine(space.vector(gen), space.vector(references))))
        return rows

    # -- consistency's references and TF-IDF space, the same for every method of a run -----------
    def _references(self, record: EditRecord) -> list[str]:
        snippets = self._snippets()
        if snippets is not None:
            found = snippets.get(str(record.extra.get("relation_id")), {}).get(
                str(record.extra.get("target_new_id")), [])
            return [s["text"] for s in found]  # subjects that truly have the new object
        return [f"{p} {record.target_new}." for p in record.extra.get("attribute_prompts", [])]

    def _snippets(self) -> dict | None:
        config: CounterFactConfig = self.config  # type: ignore[assignment]
        if config.snippets is None:
            return None
        if "snippets" not in self._loaded:
            path = self._local(config.snippets)
            self._loaded["snippets"] = read_json_object(path, "--param counterfact.snippets")
        return self._loaded["snippets"]

    def _tfidf_space(self) -> TfIdf:
        """ROME's published space, or one fitted on the references of every record of the run (all
        splits this task reads), so that every method and checkpoint is scored on the same scale."""
        if "space" not in self._loaded:
            config: CounterFactConfig = self.config  # type: ignore[assignment]
            if config.idf != "run":
                self._loaded["space"] = TfIdf(idf=self._published_idf(config.idf))
            else:
                documents = [text for r in self.records() for text in self._references(r)]
                self._loaded["space"] = TfIdf(documents)
        return self._loaded["space"]

    def _published_idf(self, source: str) -> dict[str, float]:
        import numpy as np

        base = source.rstrip("/")
        vocab = read_json_object(self._local(f"{base}/tfidf_vocab.json"),
                                 "--param counterfact.idf")
        idf = np.load(self._local(f"{base}/idf.npy"), allow_pickle=False)
        if not isinstance(vocab, dict) or len(vocab) != len(idf):
            raise ValueError(f"{source}: tfidf_vocab.json and idf.npy do not match "
                             f"({len(vocab)} words, {len(idf)} idf values)")
        return {word: float(idf[index]) for word, index in vocab.items()}

    def _local(self, source: str) -> Path:
        return local_file(source, "--param counterfact", self.options.cache_dir)
