"""Shared library of the ailab apps."""

__version__ = "0.1.0"
