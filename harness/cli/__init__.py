"""The command line: click commands that read flags, call the library and print. Nothing outside
this package imports it (``tests/test_layers.py``); ``editbench`` runs ``group.main``
(``python -m editbench.harness.cli.group`` does the same)."""
