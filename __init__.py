"""editbench: a benchmark harness for lifelong knowledge editing of language models.

The import package maps the repository's top-level folders: ``editbench.harness`` (registries,
runner, store, CLI), ``editbench.methods``, ``editbench.tasks`` and ``editbench.reports``.
"""

__version__ = "0.1.0"
