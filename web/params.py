"""One parser for snowflakes and whole numbers at every edge: ASCII digits only, bounded, within 64 bits."""

from __future__ import annotations

# SQLite and PostgreSQL keep snowflakes and permissions in signed 64-bit columns.
INT64_LIMIT = 2**63
# Longer input is refused before int() sees it (int() of 4,301+ digits raises, and costs time before that).
MAX_DIGITS = 20


class ParameterError(ValueError):
    """A request parameter is malformed; answered 400 naming `parameter`."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_whole_number(raw: str, parameter: str, *, low: int = 0, high: int = INT64_LIMIT - 1) -> int:
    """`raw` as an int in [low, high]; ParameterError unless it is 1 to 20 ASCII digits."""
    # str.isdigit() alone accepts '²' and '٣': the first breaks int(), the second reads as 3.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS) or not low <= int(raw) <= high:
        raise ParameterError(parameter, f"{parameter} must be a whole number from {low} to {high}.")
    return int(raw)


def parse_snowflake(raw: str, parameter: str) -> int:
    """A Discord id: ASCII digits, at most 20 of them, below 2^63."""
    try:
        return parse_whole_number(raw, parameter, low=0)
    except ParameterError:
        raise ParameterError(parameter, f"{parameter} must be a Discord id (a string of digits).") from None


def parse_optional_snowflake(raw: str | None, parameter: str) -> int | None:
    return None if raw is None else parse_snowflake(raw, parameter)
