"""Tasks: sources of edit records. Importing this package registers the built-in tasks."""

from . import jsonl, pocket  # noqa: F401  (registration side effects)
from .base import TASKS, Task, TaskOptions

__all__ = ["TASKS", "Task", "TaskOptions"]
