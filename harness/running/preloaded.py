"""The last module the ``--jobs`` worker server imports (``worker_start.PRELOAD``): its import
freezes what the server's imports created (``heap.py``), so no forked worker's collection walks
it and the server, when the run ends, exits in a fraction of a second instead of one. Importing it
anywhere else freezes that process's heap the same way; nothing else imports it."""

from __future__ import annotations

from .heap import freeze_what_exists

freeze_what_exists()
