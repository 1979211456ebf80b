"""Run the MEMIT or AlphaEdit release on the exported pocket stream, in turns, and score every edit
once the stream is done with the release's zsRE scoring.

Run with the release venv's interpreter, in the release's source folder (its ``util/globals.py``
reads ``globals.yml`` from the working directory; key statistics go to its ``data/stats``):

    cd RELEASE_SRC && python run_release.py --alg AlphaEdit --hparams H.json --data D.json \
        --seed 0 --turn 10 --model MODEL_DIR --corpus corpus.json --out OUT.json

RELEASE_SRC is jianghoucheng/AlphaEdit at f5248d3; its ``memit/`` package is MEMIT (see README.md
for why MEMIT runs from there). What this script adds around the release (all in README.md):

- stand-ins for packages imported at module level that nothing run here calls, and ``datasets``
  whose ``load_dataset`` serves the pocket corpus (the statistics' Wikipedia is unreachable);
- ``"cuda"`` in the release's code means the CPU (torch's factories and ``Tensor.to``/``.cuda``);
- ``torch.manual_seed(seed)`` before the first edit (the release seeds nothing);
- the driver loop of ``experiments/evaluate.py`` (lines 193-208, 223-345, 373-397), which reads
  its data set, KnownsDataset and GLUE from the network, written out here around the release's
  own functions (``get_project``, ``apply_AlphaEdit_to_model``, ``apply_memit_to_model``,
  ``compute_rewrite_quality_zsre``);
- the records as ``dsets/zsre.py`` builds them, with every paraphrase and neighbour kept and the
  neighbour answers tokenized without the BOS the Llama tokenizer adds (see ``records``).
"""

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

# -- stand-ins ------------------------------------------------------------------------------------
STUBBED = ("sklearn", "hydra", "omegaconf", "matplotlib", "wandb", "spacy", "nltk")
CORPUS: list[str] = []
USED: set[str] = set()


class _Dummy:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError("a stubbed package was called (fidelity/memit-alphaedit)")

    def __getattr__(self, name):
        return _Dummy()


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Dummy


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED:
            USED.add(fullname.split(".")[0])
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def load_dataset(name, config=None, **kwargs):
    """The release's ``layer_stats`` calls ``load_dataset("wikipedia", "20200501.en")``
    (rome/layer_stats.py:101-104) and reads ``raw_ds["train"][i]["text"]``: here the pocket
    corpus, the text editbench's key statistics use on this task."""
    USED.add(f"datasets.load_dataset({name!r}, {config!r}) -> pocket corpus")
    return {"train": [{"text": t} for t in CORPUS]}


def install_stubs() -> None:
    sys.meta_path.insert(0, _Finder())
    datasets = types.ModuleType("datasets")
    datasets.load_dataset = load_dataset
    datasets.load_metric = _Dummy  # glue_eval/*_eval.py import it; GLUE is never run here
    datasets.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    sys.modules["datasets"] = datasets


# -- "cuda" is the CPU ----------------------------------------------------------------------------
def _cpu(device):
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def install_cpu() -> None:
    to = torch.Tensor.to

    def tensor_to(self, *args, **kwargs):
        args = tuple(_cpu(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return to(self, *args, **kwargs)

    torch.Tensor.to = tensor_to
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    for name in ("tensor", "zeros", "ones", "eye", "empty", "arange", "full"):
        factory = getattr(torch, name)

        def wrapped(*args, _factory=factory, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = _cpu(kwargs["device"])
            return _factory(*args, **kwargs)

        setattr(torch, name, wrapped)


# -- records ---------------------------------------------------------------------------------------
def records(data: dict, tok) -> list[dict]:
    """The release's in-memory zsRE records (dsets/zsre.py:36-56): ``neighborhood_prompts`` holds,
    per answer token ``i``, the prompt followed by the answer's first ``i`` tokens (decoded) and
    the ``i``-th token as target. Departures, each because the pocket record is not a zsRE file
    line: all three paraphrases (zsRE has one), all neighbours (one), the neighbour prompt as is
    (zsre.py:48 appends "?" to an NQ question; the pocket neighbours are cloze prompts), and the
    answer tokenized without the BOS (zsre.py:35 keeps it on a Llama tokenizer, so the first
    "token" scored would be "<s>" and later prompts would hold the text "<s>")."""
    out = []
    for r in data["records"]:
        prompts, counts = [], []
        for nb in r["neighbours"]:
            ans = tok(" " + nb["answer"])["input_ids"]
            if ans and ans[0] == tok.bos_token_id:
                ans = ans[1:]
            prompts += [{"prompt": nb["prompt"] + tok.decode(ans[:i]), "target": tok.decode(ans[i])}
                        for i in range(len(ans))]
            counts.append(len(ans))
        out.append({**r, "neighborhood_prompts": prompts, "neighbour_token_counts": counts,
                    "attribute_prompts": [], "generation_prompts": []})
    return out


# -- scoring ---------------------------------------------------------------------------------------
def per_neighbour(flat: list, counts: list[int]) -> float:
    means, start = [], 0
    for c in counts:
        means.append(float(np.mean(flat[start:start + c])))
        start += c
    return float(np.mean(means))


def score(model, tok, recs, zsre, acc) -> dict:
    """Per edit: ES, GS, LS as the release computes them (compute_rewrite_quality_zsre, then
    summarize.py's per-case mean of each ``*_correct`` list), LS also per neighbour first (as
    editbench averages), and ES/GS with the target prefix joined without the extra space the
    release's Llama branch inserts (eval_utils_zsre.py:57; on this byte-level tokenizer
    ``' ' + decode(' Braru')`` is two spaces, which re-tokenizes as an extra token)."""
    rows = []
    for r in recs:
        got = zsre(model, tok, r, None, None)
        target = tok(" " + r["requested_rewrite"]["target_new"]["str"])["input_ids"][1:]
        subject = r["requested_rewrite"]["subject"]
        plain = {}
        for key, prompts in (("ES", [r["requested_rewrite"]["prompt"].format(subject)]),
                             ("GS", r["paraphrase_prompts"])):
            inputs = [p + tok.decode(target[:i]) for p in prompts for i in range(len(target))]
            wanted = [tok.decode(target[i]) for _ in prompts for i in range(len(target))]
            plain[key] = float(np.mean(acc(model, tok, inputs, wanted)))
        rows.append({
            "uid": r["uid"],
            "ES": float(np.mean(got["rewrite_prompts_correct"])),
            "GS": float(np.mean(got["paraphrase_prompts_correct"])),
            "LS_flat": float(np.mean(got["neighborhood_prompts_correct"])),
            "LS": per_neighbour(got["neighborhood_prompts_correct"], r["neighbour_token_counts"]),
            "ES_plain": plain["ES"], "GS_plain": plain["GS"],
        })
    return rows


def mean_rows(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "uid"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alg", choices=("MEMIT", "AlphaEdit"), required=True)
    parser.add_argument("--hparams", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--turn", type=int, required=True, help="edits per apply call")
    parser.add_argument("--model", required=True, help="a model folder whose name has 'llama'")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--save-stats", help="save the release's E[kk^T] per layer here (.pt)")
    parser.add_argument("--templates-clean", action="store_true",
                        help="diagnostic, not the release: the generated context templates with "
                        "the '<s>'/'</s>' text that generate.py:149 keeps taken out (as editbench "
                        "decodes its prefixes)")
    parser.add_argument("--templates-from", help="diagnostic, not the release: a JSON list of "
                        "prefixes (editbench's, from its log) used as the release's context "
                        "templates, each as 'PREFIX{}' (the release builds 'TEXT. {}')")
    parser.add_argument("--no-templates", action="store_true",
                        help="not the release: no generated context templates, only '{}' "
                        "(editbench's pocket default context_prefixes=0)")
    parser.add_argument("--solve-float32", action="store_true",
                        help="diagnostic, not the release: Tensor.double() returns float32 while "
                        "editing, so MEMIT's update (memit_main.py:190-201) solves in float32 as "
                        "editbench does")
    args = parser.parse_args()
    torch.set_num_threads(1)
    CORPUS[:] = json.loads(Path(args.corpus).read_text())
    install_stubs()
    install_cpu()
    sys.path.insert(0, os.getcwd())

    from AlphaEdit import AlphaEditHyperParams
    from AlphaEdit.AlphaEdit_main import apply_AlphaEdit_to_model, get_cov
    from experiments.evaluate import get_project
    from experiments.py import eval_utils_zsre
    from memit import MEMITHyperParams, apply_memit_to_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from util import nethook

    hparams = (AlphaEditHyperParams if args.alg == "AlphaEdit" else MEMITHyperParams).from_json(
        args.hparams)
    # evaluate.py:116-118
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.eos_token
    model.eval()
    data = json.loads(Path(args.data).read_text())
    recs = records(data, tok)
    zsre = eval_utils_zsre.compute_rewrite_quality_zsre
    acc = eval_utils_zsre.test_batch_prediction_acc

    t0 = time.perf_counter()
    pre = mean_rows(score(model, tok, recs, zsre, acc))
    pre_s = time.perf_counter() - t0

    # key statistics: the release's layer_stats over the pocket corpus, cached under data/stats
    t0 = time.perf_counter()
    covs = [get_cov(model, tok, hparams.rewrite_module_tmp.format(layer), hparams.mom2_dataset,
                    hparams.mom2_n_samples, hparams.mom2_dtype).cpu() for layer in hparams.layers]
    if args.save_stats:
        torch.save({layer: c for layer, c in zip(hparams.layers, covs)}, args.save_stats)
    P = cache_c = None
    if args.alg == "AlphaEdit":  # evaluate.py:193-208 (the "Llama3-8B" branch, :200-203)
        W_out = nethook.get_parameter(
            model, f"{hparams.rewrite_module_tmp.format(hparams.layers[-1])}.weight")
        d = W_out.shape[1]
        cache_c = torch.zeros((len(hparams.layers), d, d), device="cpu")
        P = torch.zeros((len(hparams.layers), d, d), device="cpu")
        for i, layer in enumerate(hparams.layers):
            P[i, :, :] = get_project(model, tok, layer, hparams)
    stats_s = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    from AlphaEdit import AlphaEdit_main
    from memit import memit_main
    main_module = AlphaEdit_main if args.alg == "AlphaEdit" else memit_main
    if args.templates_clean:
        templates = main_module.get_context_templates(model, tok)
        main_module.CONTEXT_TEMPLATES_CACHE = [
            [t.replace(tok.bos_token, "").replace(tok.eos_token, "") for t in kind]
            for kind in templates]
    if args.no_templates:
        main_module.CONTEXT_TEMPLATES_CACHE = [["{}"]]
    if args.templates_from:
        prefixes = json.loads(Path(args.templates_from).read_text())
        main_module.CONTEXT_TEMPLATES_CACHE = [["{}"], [p + "{}" for p in prefixes]]
    if args.solve_float32:
        torch.Tensor.double = lambda self, *a, **k: self.float()
    edit_s, turns = 0.0, 0
    requests_all = [{"case_id": r["case_id"], **r["requested_rewrite"]} for r in recs]
    for start in range(0, len(requests_all), args.turn):  # evaluate.py:223 chunks(ds, num_edits)
        chunk = requests_all[start:start + args.turn]
        t0 = time.perf_counter()
        if args.alg == "AlphaEdit":  # evaluate.py:260-273
            model, cache_c = apply_AlphaEdit_to_model(model, tok, chunk, hparams,
                                                      cache_template=None, cache_c=cache_c, P=P)
        else:  # evaluate.py:329-340
            model, _ = apply_memit_to_model(model, tok, chunk, hparams,
                                            return_orig_weights=False, cache_template=None)
        edit_s += time.perf_counter() - t0
        turns += 1

    t0 = time.perf_counter()
    rows = score(model, tok, recs, zsre, acc)
    eval_s = time.perf_counter() - t0

    templates = main_module.CONTEXT_TEMPLATES_CACHE
    out = {
        "alg": args.alg, "seed": args.seed, "templates_clean": args.templates_clean,
        "templates_from": args.templates_from, "no_templates": args.no_templates,
        "solve_float32": args.solve_float32,
        "edits": len(recs), "turn": args.turn,
        "turns": turns, "hparams": json.loads(Path(args.hparams).read_text()),
        "pre_edit": pre, "end_of_stream": mean_rows(rows), "per_edit": rows,
        "context_templates": templates,
        "null_space_dims": ([round(float(torch.trace(P[i]))) for i in range(len(hparams.layers))]
                            if P is not None else None),
        "stats_tokens": None,
        "edit_s": edit_s, "eval_s": eval_s, "stats_s": stats_s, "pre_eval_s": pre_s,
        "stubbed": sorted(USED), "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    e = out["end_of_stream"]
    print(f"{args.alg} seed {args.seed}: ES {100 * e['ES']:.1f} GS {100 * e['GS']:.1f} "
          f"LS {100 * e['LS']:.1f} (plain ES {100 * e['ES_plain']:.1f} GS {100 * e['GS_plain']:.1f}"
          f"; pre ES {100 * pre['ES']:.1f} LS {100 * pre['LS']:.1f}) edit {edit_s:.0f}s "
          f"eval {eval_s:.0f}s stats {stats_s:.0f}s")


if __name__ == "__main__":
    main()
