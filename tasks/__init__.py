"""Tasks: sources of edit records. Importing this package registers every built-in task.

Each top-level module of this package that defines a task registers it with ``@TASKS.register``;
the modules are imported here by discovery, as methods are, so adding a task is adding one file.
The protocol and the registry live in ``editbench.core.task``.
"""

import importlib
import pkgutil

from ..core.task import TASKS, Task, TaskConfig, TaskOptions

for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task", "TaskConfig", "TaskOptions"]
