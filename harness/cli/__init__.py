"""The command line: click commands that read flags, call the library and print. The library
never imports this package (``tests/test_layers.py``); ``editbench`` runs :func:`main`."""

from .group import main

__all__ = ["main"]
