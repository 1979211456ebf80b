"""The shared core of locate-then-edit methods (MEMIT, AlphaEdit)."""
