"""The project's exception types: one base class the CLI turns into a one-line message and exit code 1, and the
one rule for a value outside its range."""

from __future__ import annotations

from typing import Optional, Union

Number = Union[int, float]


class AlexCompressError(Exception):
    """Bad input a user can act on: a wrong file, a bad option value, an impossible request. `field` names
    the parameter at fault (the message starts with it), so that the command line can name its flag."""

    def __init__(self, message: str, *, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field


class ModelError(AlexCompressError):
    """A model file that cannot be read as a supported torchvision state dict."""


class DczError(AlexCompressError):
    """A `.dcz` container that is damaged, truncated, hostile or of an unsupported version."""


def check_range(field: str, value: "Optional[Number]", low: Number, high: "Optional[Number]" = None) -> None:
    """`field` within [low, high] (None: no upper bound; a value of None passes), or one error naming it.

    >>> check_range("batch_size", 0, 1, 1 << 20)
    Traceback (most recent call last):
    ...
    alexcompress.errors.AlexCompressError: batch_size must be between 1 and 1048576, got 0
    """
    if value is None:
        return
    if not (low <= value and (high is None or value <= high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise AlexCompressError(f"{field} must be {bound}, got {value}", field=field)


def fail(field: str, message: str) -> AlexCompressError:
    """An error about `field`: `"{field} {message}"`."""
    return AlexCompressError(f"{field} {message}", field=field)
