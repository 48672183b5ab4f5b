"""Errors raised by the preprocessing package.

Two kinds, kept apart because they map to different outcomes at the server boundary::

    ValueError
    ├── PreprocessingError        bad client data in one request  -> INVALID_ARGUMENT
    └── PreprocessingConfigError  bad spec or spec/model mismatch -> the model fails to load

Pydantic's ``ValidationError`` (also a ``ValueError``) reports a malformed ``preprocessing:``
section while the config file is parsed; :func:`driftserve.core.preprocessing.parse_spec` turns it into a
:class:`PreprocessingConfigError` that names the source file.
"""

from __future__ import annotations


class PreprocessingError(ValueError):
    """A request's raw tensor cannot be preprocessed; the message says what and where.

    ``feature`` names the offending feature when one is to blame (``None`` for shape or dtype
    errors that concern the whole tensor).
    """

    def __init__(self, message: str, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


class PreprocessingConfigError(ValueError):
    """A preprocessing spec is unusable: unfitted statistics, or it does not fit the model."""
