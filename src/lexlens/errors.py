"""Errors that reach the user as one clear line (the CLI prints them without a stack trace)."""

from __future__ import annotations

__all__ = [
    "LexlensError",
    "UsageError",
    "ModelNotAvailableError",
    "DataError",
    "IndexMismatchError",
    "NotFoundError",
    "TrainingError",
    "TrainingInterrupted",
]


class LexlensError(Exception):
    """Base class of every error lexlens reports to a user as a single line."""

    exit_code = 1


class UsageError(LexlensError):
    """Bad arguments or bad input from the caller (HTTP 400/422)."""

    exit_code = 2


class ModelNotAvailableError(LexlensError):
    """A model name or checkpoint cannot be loaded (no network, no cached weights, bad path)."""


class DataError(LexlensError):
    """A dataset or input file cannot be read as the format it claims to be."""


class IndexMismatchError(LexlensError):
    """An index was opened with a model, dimension or format it was not built with."""


class NotFoundError(LexlensError):
    """A named index, item or file does not exist (HTTP 404)."""


class TrainingError(LexlensError):
    """A training run cannot go on (its loss stopped being a number)."""


class TrainingInterrupted(LexlensError):
    """Training was stopped by the user (Ctrl-C) after saving its checkpoint."""

    exit_code = 130
