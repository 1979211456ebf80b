"""The bottom layer: the primitives every other part of editbench builds on.

Records, the method and task protocols with their registries, model layout and loading,
tokenising, the probe backends, the results store, caching, snapshots, timing, progress, config
parsing and the edit schedule. Nothing here imports anything of editbench above it (``methods``,
``tasks``, ``reports``, ``harness``); ``tests/test_layers.py`` checks it. Importing this package
loads nothing: each module is imported where it is used, so the store can be read without torch.
"""
