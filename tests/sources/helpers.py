"""Shared by the reader tests."""
import pytest

from augengine.errors import InputError


def one_line_error(call) -> str:
    """Run ``call``, expect an ``InputError`` with a one-line message, return that message."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, f"multi-line error: {message!r}"
    return message
