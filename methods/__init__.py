"""Editing methods. Importing this package registers the built-in methods."""

from .base import METHODS, EditContext, EditMethod, MethodConfig
from . import ft  # noqa: F401  (registration side effects)

__all__ = ["METHODS", "EditContext", "EditMethod", "MethodConfig"]
