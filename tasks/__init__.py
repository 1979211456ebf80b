"""Tasks: sources of edit records. Importing this package registers the built-in tasks."""

from . import counterfact, fever, jsonl, pocket, zsre  # noqa: F401  (registration side effects)
from .base import TASKS, Task, TaskOptions

__all__ = ["TASKS", "Task", "TaskOptions"]
