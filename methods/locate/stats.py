"""Second moments of MLP keys over a corpus, computed once and cached on disk.

MEMIT protects what a layer already stores through ``C0 = lambda * E[k k^T]`` over keys of generic
text; AlphaEdit projects updates onto the null space of the same matrix. Both need it per edited
layer, and it is costly on a real model (the published runs read 100,000 Wikipedia samples), so it
is computed once per (model, layer, corpus, sample count, code) and kept under the editbench cache
as safetensors, with the corpus, the sample count, the token count and the code hash in the file's
metadata. The code is the hash of this module and what it imports (``core/identity.py``): a fix to
how keys are read or counted computes them again. They are
computed under the cache entry's lock, so two runs never compute the same statistics at once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from ...core.cache import atomic_write_bytes, building, safe_name
from ...core.identity import component_code
from ...core.method import MethodSetupError
from ...core.models import model_fingerprint
from ...core.progress import progress
from ...core.sources import read_records, read_text
from ...core.tokenize import PairEncoder, pad, token_budget_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    """Text for key statistics. ``name`` identifies it in cache paths, logs and snapshots."""

    name: str
    texts: Sequence[str] | None  # None: streamed from the hub on first use
    hub: tuple[str, str | None] | None = None

    def take(self, n: int) -> list[str]:
        if self.texts is not None:
            return list(self.texts[:n])
        assert self.hub is not None
        return _stream_hub(*self.hub, n)

    def count(self, n: int) -> int:
        """How many samples ``take(n)`` yields (for a hub corpus, taken on trust as ``n``)."""
        return min(n, len(self.texts)) if self.texts is not None else n


def _digest(texts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _read_file(path: Path) -> list[str]:
    """One sample per line of a text file, or the ``text`` field of each record of a JSON Lines
    file."""
    if path.suffix == ".jsonl":
        raw = read_records(path)
        for index, record in enumerate(raw.items):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise MethodSetupError(
                    f"{raw.where(index)}: a key-statistics corpus record needs a string field "
                    "'text'"
                )
        return [record["text"] for record in raw.items]
    return [line for line in read_text(path).splitlines() if line.strip()]


def _stream_hub(dataset: str, config: str | None, n: int) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise MethodSetupError(
            f"key statistics need the {dataset!r} corpus from the Hugging Face hub, which needs "
            "the `datasets` package (pip install datasets) and network access; offline, pass a "
            "local text file with --param METHOD.stats_corpus=PATH (one sample per line) or use "
            "a task that supplies its own corpus"
        ) from None
    try:
        stream = datasets.load_dataset(dataset, config, split="train", streaming=True)
    except Exception as exc:
        raise MethodSetupError(
            f"could not open the key-statistics corpus {dataset!r} ({config}) from the hub: "
            f"{exc}; offline, pass --param METHOD.stats_corpus=PATH to a local text file"
        ) from exc
    texts = []
    for item in stream:
        text = str(item.get("text", "")).strip()
        if text:
            texts.append(text)
            if len(texts) == n:
                break
    return texts


def resolve_corpus(spec: str, hub: str, task) -> Corpus:
    """The corpus named by ``stats_corpus`` (see :class:`LocateConfig`)."""
    task_texts = task.corpus() if task is not None else None
    if spec == "auto":
        spec = "task" if task_texts is not None else "hub"
    if spec == "task":
        if task_texts is None:
            raise MethodSetupError(
                f"stats_corpus=task: the {getattr(task, 'name', 'given')} task supplies no text; "
                "use stats_corpus=hub or a path to a local text file"
            )
        return Corpus(f"task-{task.name}-{_digest(task_texts)}", list(task_texts))
    if spec == "hub":
        dataset, _, config = hub.partition(":")
        return Corpus(
            f"hub-{dataset.replace('/', '_')}-{config or 'default'}",
            None,
            (dataset, config or None),
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise MethodSetupError(
            f"stats_corpus={spec!r} is neither auto, task, hub nor an existing text file"
        )
    texts = _read_file(path)
    return Corpus(f"file-{path.stem}-{_digest(texts)}", texts)


@dataclass(frozen=True)
class KeyStats:
    """``mom2 = E[k k^T]`` (float32) of the inputs of one module over ``n_tokens`` tokens of
    ``n_samples`` samples of ``corpus``. ``mom2`` is None where a method imported what it derives
    from it (AlphaEdit's projection); ``corpus`` then names that file."""

    mom2: torch.Tensor | None
    corpus: str
    n_samples: int
    n_tokens: int


def _stats_folder(root: Path, model_id: str, corpus: str, n: int, numerics: str) -> Path:
    """Built from names a user may write (``stats_hub``, a file's stem): each part is made a
    harmless path component, so the statistics stay inside the cache folder; statistics computed by
    other code, or under other numerics (:func:`numerics_tag`), lie in another folder."""
    return (root / "key-stats" / safe_name(model_id) / safe_name(f"{corpus}-n{n}")
            / f"code-{component_code(__name__)}-{safe_name(numerics)}")


def _stats_path(root: Path, model_id: str, corpus: str, n: int, module: str,
                numerics: str) -> Path:
    return _stats_folder(root, model_id, corpus, n, numerics) / f"{safe_name(module)}.safetensors"


def numerics_tag(device: torch.device) -> str:
    """What decides the statistics' rounding on ``device`` besides the code: on the CPU the kernel
    set and the thread count (``cpu-avx512-t1``). A run under other numerics computes its own, so a
    cache filled before the pocket model moved to one thread (2026-12-05) gives a default run the
    scores a fresh clone gets, not those of two threads' statistics."""
    if device.type != "cpu":
        return device.type
    return f"cpu-{torch.backends.cpu.get_cpu_capability().lower()}-t{torch.get_num_threads()}"


def _load(path: Path) -> KeyStats:
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        return KeyStats(
            handle.get_tensor("mom2"), meta["corpus"], int(meta["n_samples"]), int(meta["n_tokens"])
        )


def key_second_moments(model: nn.Module, encoder: PairEncoder, modules: Sequence[str],
                       corpus: Corpus, n_samples: int, cache_dir: Path, device: torch.device,
                       batch_tokens: int = 8192) -> dict[str, KeyStats]:
    """``E[k k^T]`` of the inputs of each of ``modules``, loaded from the cache where present and
    otherwise computed in one pass over the corpus for all missing modules together."""
    n = corpus.count(n_samples)
    model_id = model_fingerprint(model)
    numerics = numerics_tag(device)
    paths = {m: _stats_path(cache_dir, model_id, corpus.name, n, m, numerics) for m in modules}
    found = {m: _load(p) for m, p in paths.items() if p.is_file()}
    for module, stats in found.items():
        log.info("loaded cached key statistics from %s (%s, %d samples, %d tokens)", paths[module],
                 stats.corpus, stats.n_samples, stats.n_tokens)
    missing = [m for m in modules if m not in found]
    if missing:
        with building(_stats_folder(cache_dir, model_id, corpus.name, n, numerics),
                      f"key statistics of {corpus.name}"):
            # another process may have computed them while this one waited
            found.update({m: _load(paths[m]) for m in missing if paths[m].is_file()})
            _compute_missing(model, encoder, [m for m in modules if m not in found], corpus, n,
                             paths, found, model_id, device, batch_tokens)
    return {m: found[m] for m in modules}


def _compute_missing(model: nn.Module, encoder: PairEncoder, missing: list[str], corpus: Corpus,
                     n: int, paths: dict[str, Path], found: dict[str, KeyStats], model_id: str,
                     device: torch.device, batch_tokens: int) -> None:
    if missing:
        texts = corpus.take(n)
        computed = _accumulate(model, encoder, missing, texts, device, batch_tokens)
        for module, (mom2, tokens) in computed.items():
            stats = KeyStats(mom2, corpus.name, len(texts), tokens)
            meta = {"corpus": corpus.name, "n_samples": str(len(texts)), "n_tokens": str(tokens),
                    "code": component_code(__name__),
                    "module": module, "model": model_id}
            atomic_write_bytes(paths[module], save({"mom2": mom2.contiguous()}, metadata=meta))
            log.info(
                "computed key statistics of %s over %d samples (%d tokens) of %s; cached at %s",
                module,
                len(texts),
                tokens,
                corpus.name,
                paths[module],
            )
            found[module] = stats


class _LastLayerDone(Exception):
    """Raised by the hook of the last module needed: nothing above it contributes to the
    statistics."""


@contextmanager
def stopping_after(model: nn.Module, modules: Sequence[str],
                   on_input: Callable[[str, torch.Tensor], None]) -> Iterator[Callable[..., None]]:
    """A forward call that hands each of ``modules`` its input and stops the pass once all of them
    have run, so the layers above the highest one and the output head never run (for Llama-3-8B's
    layers 4-8 that is 23 of 32 blocks and the 128K-wide head). The release does the same
    (``Trace(..., stop=True)``, kmeng01/memit ``rome/layer_stats.py`` line 159)."""
    seen: set[str] = set()

    def hook_for(name: str):
        def hook(_module, args, _output):
            on_input(name, args[0])
            seen.add(name)
            if len(seen) == len(modules):
                raise _LastLayerDone
        return hook

    def forward(**inputs) -> None:
        seen.clear()
        try:
            model(**inputs, use_cache=False)
        except _LastLayerDone:
            return
        raise RuntimeError(f"the forward pass never reached {sorted(set(modules) - seen)}")

    handles = [model.get_submodule(m).register_forward_hook(hook_for(m)) for m in modules]
    try:
        yield forward
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _accumulate(
    model: nn.Module,
    encoder: PairEncoder,
    modules: Sequence[str],
    texts: Sequence[str],
    device: torch.device,
    batch_tokens: int,
) -> dict[str, tuple[torch.Tensor, int]]:
    """Sums of ``k k^T`` in float32 whatever the model's dtype (a bf16 sum of millions of tokens
    keeps about three significant digits), divided by the token count at the end."""
    max_len = int(
        getattr(model.config, "max_position_embeddings", None)
        or getattr(model.config, "n_positions", 1024)
    )
    max_len = min(max_len, batch_tokens)
    ids = [encoder.encode_text(t)[:max_len] for t in texts]
    total = sum(len(seq) for seq in ids)
    sums: dict[str, torch.Tensor] = {}
    mask_now: list[torch.Tensor] = []

    def collect(name: str, inputs: torch.Tensor) -> None:
        keys = inputs[mask_now[0]].float()
        sums[name] = sums[name].addmm_(keys.T, keys) if name in sums else keys.T @ keys

    log.info(
        "key statistics of %s: %d samples, %d tokens; each forward pass stops after the last of "
        "them",
        ", ".join(modules),
        len(ids),
        total,
    )
    bar = progress(total=total, desc="key statistics", unit="token")
    tokens = 0
    with stopping_after(model, modules, collect) as forward, closing(bar):
        for indices in token_budget_batches(
            [len(seq) for seq in ids], batch_tokens, by_length=False
        ):
            input_ids, attention = pad([ids[i] for i in indices], encoder.pad_id)
            mask_now[:] = [attention.bool().to(device)]
            forward(input_ids=input_ids.to(device), attention_mask=attention.to(device))
            done = int(attention.sum())
            tokens += done
            bar.update(done)
    if tokens == 0:
        raise MethodSetupError("the key-statistics corpus is empty")
    return {m: ((sums[m] / tokens).cpu(), tokens) for m in modules}
