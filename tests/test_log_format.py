"""LOG_FORMAT=json: one JSON object a line, the event and its ids as fields; text stays the default."""

from __future__ import annotations

import json
import logging
import sys

from log_format import JsonFormatter, parse_message


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("bot.member_sync", logging.INFO, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]


def test_a_line_becomes_one_object_with_the_event_and_its_ids_as_fields() -> None:
    line = JsonFormatter().format(
        _record("sync.done guild=%d members=%d seconds=%.1f", 81384788765712384, 12, 0.5)
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry.pop("time").endswith("+00:00")
    assert entry == {
        "level": "INFO",
        "logger": "bot.member_sync",
        "event": "sync.done",
        "guild": "81384788765712384",
        "members": "12",
        "seconds": "0.5",
    }


def test_free_text_after_the_colon_is_the_message() -> None:
    event, fields, text = parse_message(
        "bot.redirect_uri_not_registered uri=https://x.example/cb: add it under OAuth2 > Redirects"
    )
    assert (event, fields, text) == (
        "bot.redirect_uri_not_registered",
        {"uri": "https://x.example/cb"},
        "add it under OAuth2 > Redirects",
    )


def test_a_value_with_spaces_runs_to_the_next_field() -> None:
    _, fields, _ = parse_message(
        "bot.discord_unreachable attempt=2 reason=the connection was refused retry_in=5s"
    )
    assert fields == {"attempt": "2", "reason": "the connection was refused", "retry_in": "5s"}


def test_a_line_without_an_event_keeps_its_text_and_a_field_cannot_overwrite_the_level() -> None:
    assert parse_message("Ctrl-C to stop.") == (None, {}, "Ctrl-C to stop.")
    entry = json.loads(JsonFormatter().format(_record("links.loaded level=ERROR active=3")))
    assert entry["level"] == "INFO" and entry["field_level"] == "ERROR" and entry["active"] == "3"


def test_a_traceback_and_control_characters_stay_inside_the_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    line = JsonFormatter().format(_record("web.unhandled_error path=%s", "/x\x1b[31m\n", exc_info=exc_info))
    assert "\n" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["path"] == "/x\x1b[31m\n" and "ValueError: boom" in entry["exc"]
