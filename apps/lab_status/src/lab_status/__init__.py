"""The lab's reference app."""

__version__ = "0.1.0"
