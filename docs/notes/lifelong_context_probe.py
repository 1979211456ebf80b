"""Does the lifelong pocket model know its facts and read a fact from its context?

docs/pocket-world.md, "The lifelong scenario", quotes this probe's figures: 150 eval (and 150
train) records of ``--task pocket-lifelong``, each asked teacher-forced (right when every answer
token is the argmax) with and without "New fact:" lines before it. Run from the checkout:
``python docs/notes/lifelong_context_probe.py [MODEL_DIR] [THREADS]`` (default: the task's model,
trained first if it is not cached).
"""

from __future__ import annotations

import random
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import editbench.tasks  # noqa: F401  (registers the tasks)
from editbench.core.task import TASKS, TaskOptions

LINE = "New fact: {} {}.\n"


def main() -> None:
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    task = TASKS["pocket-lifelong"](TaskOptions())
    path = sys.argv[1] if len(sys.argv) > 1 else task.default_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()

    def exact(pairs: list[tuple[str, str]]) -> float:
        right = 0
        for prompt, target in pairs:
            head = tokenizer(prompt)["input_ids"]
            answer = tokenizer(f"{prompt} {target}")["input_ids"][len(head):]
            with torch.no_grad():
                logits = model(torch.tensor([head + answer])).logits[0, len(head) - 1:-1]
            right += int((logits.argmax(-1) == torch.tensor(answer)).all())
        return right / len(pairs)

    rng = random.Random(0)
    edits = rng.sample(task.records("eval"), 150)
    others = edits[1:] + edits[:1]
    rows = {
        "eval facts known (true object)": [(r.prompt, r.target_true) for r in edits],
        "first paraphrase known": [(r.paraphrases[0], r.target_true) for r in edits],
        "edit in context -> its object": [
            (LINE.format(r.prompt, r.target_new) + r.prompt, r.target_new) for r in edits],
        "edit in context, asked in a paraphrase": [
            (LINE.format(r.prompt, r.target_new) + r.paraphrases[0], r.target_new)
            for r in edits],
        "another edit in context -> memorised object": [
            (LINE.format(o.prompt, o.target_new) + r.prompt, r.target_true)
            for r, o in zip(edits, others, strict=True)],
        "edit in context, a neighbour asked -> unedited answer": [
            (LINE.format(r.prompt, r.target_new) + r.neighbours[0].prompt, r.neighbours[0].answer)
            for r in edits],
        "two lines, the edit second -> its object": [
            (LINE.format(o.prompt, o.target_new) + LINE.format(r.prompt, r.target_new) + r.prompt,
             r.target_new) for r, o in zip(edits, others, strict=True)],
        "a neighbour asked alone -> unedited answer": [
            (r.neighbours[0].prompt, r.neighbours[0].answer) for r in edits],
    }
    taught = rng.sample(task.records("train"), 150)
    rows["TRAIN people: edit in context -> its object"] = [
        (LINE.format(r.prompt, r.target_new) + r.prompt, r.target_new) for r in taught]
    rows["TRAIN people: another edit in context -> memorised"] = [
        (LINE.format(o.prompt, o.target_new) + r.prompt, r.target_true)
        for r, o in zip(taught, taught[1:] + taught[:1], strict=True)]
    for label, pairs in rows.items():
        print(f"{label:<55} {exact(pairs):.3f}")


if __name__ == "__main__":
    main()
