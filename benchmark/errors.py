"""Errors the harness reports to users as one line (no traceback unless ``--debug``)."""

from __future__ import annotations


class BenchError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(BenchError):
    """A run config, prompt file or world config is malformed; the message names file and field."""


class UnknownNameError(BenchError):
    """A method, classifier, prompt set or profile name is not registered."""


class ModelLoadError(BenchError):
    """A model or weights file is missing, corrupt or unsafe."""


class DataError(BenchError):
    """Images or predictions are unusable (NaN, Inf, wrong shape)."""


class CacheError(BenchError):
    """The cache or output directory cannot be written."""
