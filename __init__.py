"""editbench: a benchmark harness for lifelong knowledge editing of language models.

The import package maps the repository's top-level folders: ``editbench.core`` (records,
protocols, registries, the store), ``editbench.methods``, ``editbench.tasks``,
``editbench.reports`` and ``editbench.harness`` (a run's plan, the runner, evaluation, checks, the
command line).
"""


#: the Python API (``editbench.run``, ``editbench.plan``, ``editbench.edit``), loaded on first use
#: so that importing editbench stays cheap
_API = ("run", "plan", "edit")


def __getattr__(name: str):
    if name == "__version__":  # kept in its own module, which the harness imports (no cycle)
        from ._version import __version__

        return __version__
    if name in _API:
        from .harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'editbench' has no attribute {name!r}")
