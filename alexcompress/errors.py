"""The project's exception types: one base class the CLI turns into a one-line message and exit code 1."""

from __future__ import annotations


class AlexCompressError(Exception):
    """Bad input a user can act on: a wrong file, a bad option value, an impossible request."""


class ModelError(AlexCompressError):
    """A model file that cannot be read as a supported torchvision state dict."""


class DczError(AlexCompressError):
    """A `.dcz` container that is damaged, truncated, hostile or of an unsupported version."""
