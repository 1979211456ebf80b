"""``python -m editbench.harness.cli``: the ``editbench`` command."""

from .group import main

main()
