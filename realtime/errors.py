"""The errors a user can cause: bad input, a missing device, a missing optional dependency.

Every one of them derives from :class:`AedError`. The CLI prints an ``AedError`` (and an
``OSError`` from the file system) as one line; anything else is a programming error and keeps
its traceback. Each class also derives from the built-in it refines (``ValueError``,
``RuntimeError``, ``ImportError``), so ``except ValueError`` in a caller's code still works.

Example:
    >>> issubclass(AudioError, ValueError) and issubclass(AudioError, AedError)
    True
"""
from __future__ import annotations

__all__ = ["AedError", "AudioError", "ConfigError", "EngineError", "ModelFileError"]


class AedError(Exception):
    """Base of every error caused by the user's input or environment, reported as one line."""


class ConfigError(AedError, ValueError):
    """A model config or detector setting outside what is accepted; the message says what is."""


class AudioError(AedError, ValueError):
    """Audio that cannot be used: unreadable, corrupt, truncated, lying about its length, NaN/Inf, empty."""


class ModelFileError(AedError, ValueError):
    """A model file (checkpoint, ONNX, TensorRT plan) is missing, corrupt, foreign or stale."""


class EngineError(AedError, RuntimeError):
    """The inference backend failed for a reason outside the caller's code: no GPU, out of memory, a driver error."""
