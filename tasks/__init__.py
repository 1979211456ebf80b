"""Tasks: sources of edit records. Importing this package registers the built-in tasks."""

from .base import TASKS, Task, TaskOptions
from . import jsonl, pocket  # noqa: F401  (registration side effects)

__all__ = ["TASKS", "Task", "TaskOptions"]
