"""The trainer's errors: their names are what the failure file and the job's FailureReason start with."""

from __future__ import annotations


class HyperparameterError(ValueError):
    """A hyperparameter is missing, unknown or has a bad value."""


class TrainingDataError(ValueError):
    """A channel or its CSV does not fit the contract (missing file, column, label, ...)."""
