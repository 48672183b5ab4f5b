"""Model versions are ASCII decimal integers within int64; anything else is a precise client error."""

from __future__ import annotations

import pytest

from driftserve.core.config import MAX_VERSION, parse_version, version_number
from driftserve.core.errors import InvalidArgument


@pytest.mark.parametrize("text,number", [("0", 0), ("1", 1), ("007", 7), (str(MAX_VERSION), MAX_VERSION)])
def test_valid_versions(text: str, number: int) -> None:
    assert version_number(text) == number and parse_version(text) == number


@pytest.mark.parametrize(
    "text",
    ["", "²", "③", "١", "１", "-1", "+1", " 1", "1 ", "1.0", "0x10", "1_000", str(MAX_VERSION + 1), "9" * 4301],
)
def test_invalid_versions(text: str) -> None:
    assert version_number(text) is None
    with pytest.raises(InvalidArgument) as info:
        parse_version(text)
    message = info.value.message
    assert message.startswith(f"model version must be a decimal integer from 0 to {MAX_VERSION} in ASCII digits 0-9")
    assert len(message) < 300  # the 4,301 digits are clipped
