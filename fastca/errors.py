"""fastca's own errors: a user's mistake (bad input, a file that is not a model, a run that cannot
be done as asked) rather than a bug in fastca.

Each subclass also subclasses the builtin the library raised before it existed, so code written
against those (``except ValueError``, ``pytest.raises(ValueError)``) keeps working. The command
line (:func:`fastca.cli.main`) prints a :class:`FastcaError` as one line with exit status 2 and
lets any other exception through with its traceback: an exception of another type is a bug.
"""

from __future__ import annotations


class FastcaError(Exception):
    """Base of the errors fastca raises on purpose, for a problem with what it was given."""


class InputError(FastcaError, ValueError):
    """A value, file or option that fastca cannot take (wrong range, malformed file, unknown name)."""


class InputTypeError(FastcaError, TypeError):
    """An argument of the wrong type (a str where an array goes, a float where an int goes)."""


class RunError(FastcaError, RuntimeError):
    """A run that cannot go on as asked (a store in use, a backend that is not usable here)."""


class NonFiniteError(FastcaError, FloatingPointError):
    """A state or loss that became NaN or inf: the model (or its noise) grows without bound."""
