"""Editing methods. Importing this package registers the built-in methods."""

from . import ft  # noqa: F401  (registration side effects)
from .base import METHODS, EditContext, EditMethod, MethodConfig

__all__ = ["METHODS", "EditContext", "EditMethod", "MethodConfig"]
