"""A run's protocol: the card it names, under the settings the user gave.

``--protocol NAME`` fills every setting the card fixes and the user left out (``--batch-size``,
``--checkpoints``, ``--gen-eval``, ``--gen-rule``, ``--gen-max-tokens``, ``--locality``,
``--prompt-format``, a method's sub-batch; its edit count is the default of ``--edits``, up to
the records the task has); a setting the user gave wins and is recorded as a change to the card
(:attr:`~editbench.core.protocol.Protocol.modified`), so the board marks the run and ranks it
only beside runs changed the same way. :func:`apply_protocol` returns the spec with every such
setting concrete, which is what the rest of the plan reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ...core.protocol import Protocol, card, with_changes
from .settings import RunSpec

#: new tokens a generated answer may take under each rule, unless --gen-max-tokens says otherwise
#: (wild: LocFT-BF's ``max_tokens=32``, eval_edit_metric.py:77-81)
RULE_TOKENS = {"editbench": 16, "wild": 32}


def _generation(spec: RunSpec, base: Protocol) -> str:
    """The generated-answer rule: ``--gen-rule`` if given, ``off`` for ``--gen-eval off``, else
    the card's (``--gen-eval on`` under a card that scores no generation: editbench's rule)."""
    if spec.gen_rule is not None:
        if spec.gen_eval is False:
            raise ValueError(f"--gen-rule {spec.gen_rule} asks for generated scoring, which "
                             "--gen-eval off turns off: give one of them")
        return spec.gen_rule
    if spec.gen_eval is False:
        return "off"
    if spec.gen_eval and base.generation == "off":
        return "editbench"
    return base.generation


def apply_protocol(spec: RunSpec, methods: Iterable[str]) -> tuple[RunSpec, Protocol]:
    """``spec`` with the card's settings where the user gave none, and the protocol the run is
    under (the card, or the card with the user's changes recorded). ``methods`` are the run's
    (``--methods``, or the default ones): the card's method settings go to those alone."""
    base = card(spec.protocol)
    generation = _generation(spec, base)
    method_params = {owner: dict(values) for owner, values in base.method_params.items()}
    changed_params: dict[str, dict[str, str]] = {}
    for owner, values in spec.params.items():
        for key, value in values.items():
            card_value = base.method_params.get(owner, {}).get(key)
            if card_value is not None and card_value != value:
                changed_params.setdefault(owner, {})[key] = value
                method_params[owner][key] = value
    scoring_at = base.scoring_at if not spec.checkpoints else "chosen"
    tokens = spec.gen_max_tokens
    if generation != base.generation and spec.gen_max_tokens is None:
        tokens = RULE_TOKENS.get(generation)  # another rule than the card's: that rule's budget
    protocol = with_changes(
        base, edits_per_turn=spec.batch_size, locality=spec.locality, generation=generation,
        answer_tokens=tokens, prompt_format=spec.prompt_format,
        # no generated scoring: the card's generated headline gives way to teacher forcing
        headline="teacher-forced" if generation == "off" else None,
        method_params=method_params if changed_params else None,
        scoring_at=scoring_at if spec.checkpoints else None)
    in_run = {label.partition("@")[0] for label in methods} | set(methods)
    params = {owner: dict(values) for owner, values in base.method_params.items()
              if owner in in_run}
    for owner, values in spec.params.items():  # the user's --param over the card's
        params.setdefault(owner, {}).update(values)
    effective = replace(
        spec, batch_size=protocol.edits_per_turn,
        gen_eval=generation != "off", gen_rule=None if generation == "off" else generation,
        gen_max_tokens=protocol.answer_tokens or RULE_TOKENS.get(generation, 16),
        locality=protocol.locality, prompt_format=protocol.prompt_format, params=params)
    return effective, protocol
