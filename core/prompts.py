"""How a prompt is shown to the model (``--prompt-format raw|chat|qa|fewshot``).

Every text the model reads as a prompt, when a method edits and when the probes score or generate,
passes through one :class:`PromptFormat` held by the run's :class:`~.tokenize.PairEncoder`, so
editing and both kinds of scoring see the same thing:

- ``raw``: the prompt as it is, the target after one space (editbench's behaviour before formats;
  a raw run's scores and run id are those of earlier versions).
- ``chat``: the prompt as the one user message of the tokenizer's chat template, rendered with
  ``add_generation_prompt=True``, so the answer is the start of the assistant's turn, as EasyEdit's
  ``use_chat_template`` does (``easyeditor/evaluate/evaluate_utils.py``, ``models/wise/utils.py``)
  and lm-evaluation-harness's ``--apply_chat_template``. Two choices differ from EasyEdit's: the
  target follows the generation prompt with no space (it is the assistant's first word, as the
  model writes it; EasyEdit inserts ``' '``), and the rendered text is tokenized without adding
  special tokens (the template writes its own BOS; EasyEdit's tokenizer call adds a second one).
- ``qa``: the QA-task instruction of QAEdit's release ("The Mirage of Model Editing", ACL 2025;
  ``WanliYoung/Revisit-Editing-Evaluation``, ``easyeditor/evaluate/evaluate_utils.py:106``,
  ``--context_type qa_inst``): ``"Please answer the question:\\n\\nQ: {prompt}\\nA:"``. The release
  applies it when scoring only; here it is also what the methods edit with.
- ``fewshot``: three solved examples, one ``"{prompt} {answer}"`` line each, then the prompt. They
  are drawn once per task (seed 0, whatever the run's seed) from the records of its train split
  that carry a true answer, so they read like the task's own prompts and are the same for every
  method, record and seed; a task without such a split uses :data:`BUILTIN_EXAMPLES`.

The format applies to every prompt a probe is given, the general-capability questions included
(as lm-evaluation-harness applies a chat template to every request). A method's own texts that are
not prompts stay raw: the key-statistics corpus and the start words its context prefixes are
generated from. This module imports neither torch nor transformers (``editbench --help`` reads
:data:`PROMPT_FORMATS`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROMPT_FORMATS = ("raw", "chat", "qa", "fewshot")

#: QAEdit's ``qa_inst`` context (see the module docstring)
QA_TEMPLATE = "Please answer the question:\n\nQ: {prompt}\nA:"

#: solved examples of ``fewshot`` where the task has no train split with true answers
BUILTIN_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("The mother tongue of Dante Alighieri is", "Italian"),
    ("Microsoft was founded by", "Bill Gates"),
)
FEWSHOT_COUNT = 3
FEWSHOT_SEED = 0


@dataclass(frozen=True)
class PromptFormat:
    """One of :data:`PROMPT_FORMATS`; ``examples`` are the solved (prompt, answer) pairs of
    ``fewshot`` (:func:`fewshot_examples`)."""

    name: str = "raw"
    examples: tuple[tuple[str, str], ...] = BUILTIN_EXAMPLES

    def __post_init__(self) -> None:
        if self.name not in PROMPT_FORMATS:
            raise ValueError(f"--prompt-format {self.name!r} is not one of: "
                             f"{', '.join(PROMPT_FORMATS)}")

    @property
    def is_raw(self) -> bool:
        return self.name == "raw"

    @property
    def separator(self) -> str:
        """What comes between the shown prompt and the target: the answer of a chat starts the
        assistant's turn; otherwise one space, as ROME/MEMIT and MEND join them."""
        return "" if self.name == "chat" else " "

    @property
    def own_special_tokens(self) -> bool:
        """Whether the shown text carries its own special tokens (a chat template writes BOS), so
        that it is tokenized without adding the tokenizer's."""
        return self.name == "chat"

    def render(self, prompt: str, tokenizer: Any = None) -> str:
        """The text the model is shown for ``prompt`` (``chat`` needs the tokenizer)."""
        if self.name == "chat":
            check_chat_template(tokenizer)
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                 tokenize=False, add_generation_prompt=True)
        if self.name == "qa":
            return QA_TEMPLATE.format(prompt=prompt)
        if self.name == "fewshot":
            return "".join(f"{p} {a}\n" for p, a in self.examples) + prompt
        return prompt

    def offset(self, prompt: str, tokenizer: Any = None) -> int:
        """Where ``prompt`` begins in :meth:`render`'s text, so that a position inside the prompt
        (a subject's last character) can be found in what the model reads."""
        shown = self.render(prompt, tokenizer)
        at = shown.rfind(prompt)
        if at < 0:  # a template that trims its messages (Llama 3's)
            at = shown.rfind(prompt.strip()) - (len(prompt) - len(prompt.lstrip()))
        if at < 0 or not prompt.strip():
            raise ValueError(f"the {self.name} format does not show the prompt {prompt!r} "
                             "verbatim, so positions inside it cannot be found")
        return at

    def config(self) -> dict[str, object]:
        """What a run's config records of the format (nothing for ``raw``: see the module
        docstring)."""
        if self.name == "fewshot":
            return {"prompt_format": self.name,
                    "fewshot_examples": [list(example) for example in self.examples]}
        return {} if self.is_raw else {"prompt_format": self.name}


RAW = PromptFormat()


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def check_chat_template(tokenizer: Any) -> None:
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", None) or "this model"
        raise ValueError(f"--prompt-format chat: {name}'s tokenizer has no chat template; use "
                         "--prompt-format raw, qa or fewshot")


def format_warning(name: str, tokenizer: Any) -> str | None:
    """The one-line warning for a model with a chat template run raw (None otherwise); a model
    without one asked for ``chat`` raises its one-line error."""
    if name == "chat":
        check_chat_template(tokenizer)
    if name == "raw" and has_chat_template(tokenizer):
        model = getattr(tokenizer, "name_or_path", None) or "the model"
        return (f"{model} has a chat template but prompts are shown raw; --prompt-format chat "
                "shows them in it")
    return None


def fewshot_examples(train: Sequence[Any], count: int = FEWSHOT_COUNT,
                     seed: int = FEWSHOT_SEED) -> tuple[tuple[str, str], ...]:
    """``count`` solved examples: a seeded sample of the train records (``EditRecord``) that have
    a true answer, in their split's order; :data:`BUILTIN_EXAMPLES` when there are fewer."""
    solved = [(r.prompt, r.target_true) for r in train if r.target_true]
    if len(solved) < count:
        return BUILTIN_EXAMPLES
    chosen = sorted(random.Random(seed).sample(range(len(solved)), count))
    return tuple(solved[i] for i in chosen)
