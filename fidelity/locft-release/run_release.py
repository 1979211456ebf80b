"""Run the LocFT release's fine-tuning (``fine-tune.py``) and its evaluation
(``eval_edit_metric.py``) at ICT-STAR/LocFT 51db785, with the shims of the README and nothing else.

Fine-tuning: the release's ``fine-tune.py`` source is executed as ``__main__`` with one textual
substitution, ``f'cuda:{config.device}'`` -> ``'cpu'`` (its two device lines, ``:66`` and
``:243``; asserted to occur exactly twice), after ``random.seed(S)`` and ``torch.manual_seed(S)``
(the release seeds nothing; its per-epoch ``random.shuffle`` at ``:122`` draws from Python's
``random``). The yaml it reads is the release's ``hparams/llama3-8b.yaml`` with the model path,
the layer (22 of 32 -> 2 of 4, editbench's default rule) and, for a variant, ``batch_size`` and
``lr`` replaced (written next to the output). ``execute_ft`` is wrapped by a timer.

Evaluation: ``eval_edit_metric.py`` is executed as ``__main__`` with a stand-in ``vllm`` module
(``LLM``/``SamplingParams``: greedy decoding with Hugging Face ``generate`` on the CPU, up to
``max_tokens`` new tokens, stopping at EOS, and the text cut at the first stop string, which vLLM
leaves out of the output). The release's normalisation and exact match are its own.

    /tmp/locft-venv/bin/python fidelity/locft-release/run_release.py --release SRC --data FILE \
        --model MODEL --seed S --out DIR [--batch-size 100] [--lr 5e-4] [--layer 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import sys
import time
import types
from pathlib import Path

import torch
import yaml

EVAL_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def vllm_stub(dtype: torch.dtype) -> types.ModuleType:
    """``vllm.LLM`` and ``vllm.SamplingParams`` as ``eval_edit_metric.py`` uses them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    module = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, temperature=1.0, max_tokens=16, stop=None):
            assert temperature == 0, "the release decodes greedily"
            self.max_tokens, self.stop = max_tokens, list(stop or [])

    class _Completion:
        def __init__(self, text):
            self.text = text

    class _Output:
        def __init__(self, text):
            self.outputs = [_Completion(text)]

    class LLM:
        def __init__(self, model, tensor_parallel_size=1, trust_remote_code=False):
            self.tok = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, torch_dtype=dtype).eval()

        def generate(self, prompts, params):
            outputs = []
            eos = self.tok.eos_token_id
            for prompt in prompts:
                # vLLM adds the BOS as this does
                ids = self.tok(prompt, return_tensors="pt", return_token_type_ids=False)
                with torch.no_grad():
                    new = self.model.generate(**ids, do_sample=False,
                                              max_new_tokens=params.max_tokens,
                                              eos_token_id=eos, pad_token_id=eos)
                new = new[0, ids["input_ids"].shape[1]:].tolist()
                if eos in new:
                    new = new[:new.index(eos)]
                text = self.tok.decode(new, skip_special_tokens=True)
                cut = [text.index(s) for s in params.stop if s and s in text]
                outputs.append(_Output(text[:min(cut)] if cut else text))
            return outputs

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module


def run_script(path: Path, argv: list[str], substitutions: dict[str, tuple[str, int]],
               wrap: str | None = None) -> tuple[dict, float]:
    """Execute ``path`` as ``__main__`` with ``argv``; ``wrap`` names a function whose calls are
    timed. Returns its namespace and the wrapped function's seconds."""
    source = path.read_text()
    for old, (new, count) in substitutions.items():
        assert source.count(old) == count, (old, source.count(old))
        source = source.replace(old, new)
    head, main = source.split('if __name__ == "__main__":', 1)
    namespace = {"__name__": "__main__", "__file__": str(path)}
    sys.argv = [str(path), *argv]
    if str(path.parent) not in sys.path:  # as `python fine-tune.py` run in the release's folder
        sys.path.insert(0, str(path.parent))
    exec(compile(head, str(path), "exec"), namespace)
    timed = {"seconds": 0.0}
    if wrap:
        inner = namespace[wrap]

        def timer(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                timed["seconds"] += time.perf_counter() - start

        namespace[wrap] = timer
    exec(compile("if True:" + main, str(path), "exec"), namespace)
    return namespace, timed["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--eval-dtype", choices=sorted(EVAL_DTYPE), default="float32")
    parser.add_argument("--eval-only", action="store_true", help="score an existing OUT/model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "model"
    result = {"seed": args.seed, "data": str(args.data), "eval_dtype": args.eval_dtype}
    if not args.eval_only:
        hparams = yaml.safe_load((args.release / "hparams/llama3-8b.yaml").read_text())
        hparams.update(model_name_or_path=str(args.model), layer=args.layer)
        if args.batch_size is not None:
            hparams["batch_size"] = args.batch_size
        if args.lr is not None:
            hparams["lr"] = args.lr
        config = args.out / "hparams.yaml"
        config.write_text(yaml.safe_dump(hparams))
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        log = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(log):
            _, edit_seconds = run_script(
                args.release / "fine-tune.py",
                ["--config_path", str(config), "--data_path", str(args.data),
                 "--save_model_dir", str(saved)],
                {"f'cuda:{config.device}'": ("'cpu'", 2)}, wrap="execute_ft")
        (args.out / "fine-tune.log").write_text(log.getvalue())
        epochs = log.getvalue().count("=== Epoch:")
        steps = len(re.findall(r"Batch loss: (\S+)", log.getvalue()))
        skipped = sum(float(x) < 1e-2 for x in re.findall(r"Batch loss: (\S+)", log.getvalue()))
        result.update(hparams=hparams, edit_seconds=edit_seconds, epochs=epochs,
                      mini_batches=steps, skipped_steps=skipped,
                      total_seconds=time.perf_counter() - start)
    sys.modules["vllm"] = vllm_stub(EVAL_DTYPE[args.eval_dtype])
    n = len(json.loads(args.data.read_text()))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        _, eval_seconds = run_script(
            args.release / "eval_edit_metric.py",
            ["--data_path", str(args.data), "--model_path", str(saved), "--tp_size", "1",
             "--num_samples", str(n)], {}, wrap="run_evaluation")
    text = log.getvalue()
    (args.out / f"eval-{args.eval_dtype}.log").write_text(text)
    result.update(
        eval_seconds=eval_seconds,
        release_em_es=float(re.search(r"Reliability \(Src\) EM: (\S+)", text).group(1)),
        release_em_gs=float(re.search(r"Generalization \(Rephrase\) EM: (\S+)", text).group(1)))
    name = ("release.json" if args.eval_dtype == "float32"
            else f"release-eval-{args.eval_dtype}.json")
    if args.eval_only and (args.out / name).exists():
        result = {**json.loads((args.out / name).read_text()), **result}
    (args.out / name).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "hparams"}))


if __name__ == "__main__":
    main()
