"""Editing methods. Importing this package registers every built-in method.

Each top-level module of this package that defines a method registers it with ``@METHODS.register``;
the modules are imported here by discovery, so adding a method is adding one file. Shared cores live
in subpackages (``hypernet/``, ``locate/``) and are imported by the methods that use them.
"""

import importlib
import pkgutil

from ..core.method import METHODS, EditContext, EditMethod, MethodConfig, MethodRef, Trainable

for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "EditContext", "EditMethod", "MethodConfig", "MethodRef", "Trainable"]
