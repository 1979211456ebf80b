"""editbench: a benchmark harness for lifelong knowledge editing of language models.

The import package maps the repository's top-level folders: ``editbench.harness`` (registries,
runner, store, CLI), ``editbench.methods``, ``editbench.tasks`` and ``editbench.reports``.
"""

__version__ = "0.1.0"

#: the Python API (``editbench.run``, ``editbench.edit``), loaded on first use so that importing
#: editbench stays cheap
_API = ("run", "edit")


def __getattr__(name: str):
    if name in _API:
        from .harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'editbench' has no attribute {name!r}")
