"""The shared core of locate-then-edit methods (MEMIT, AlphaEdit): where a fact is read
(:mod:`.prompts`), the target value written there (:mod:`.values`), keys and values through hooks
(:mod:`.hooks`), cached key statistics (:mod:`.stats`) and the batch loop (:mod:`.editor`).
See docs/locate-then-edit.md."""
