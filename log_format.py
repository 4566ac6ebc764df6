"""LOG_FORMAT=json: one JSON object per log line, the event name and its `key=value` ids as fields."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

# Our lines read `event.name key=value key=value: free text`; the event is dotted lower-case words.
_EVENT = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)(?=\Z|[ :])")
# A field's value runs to the next ` key=`, to `: ` (the free text), or to the end.
_FIELD = re.compile(r" ([a-z_][a-z0-9_]*)=(.*?)(?= [a-z_][a-z0-9_]*=|: |\Z)", re.DOTALL)
# Names a field may not take: they are the record's own.
_RESERVED = frozenset({"time", "level", "logger", "event", "message", "exc"})


def parse_message(message: str) -> tuple[str | None, dict[str, str], str]:
    """Split `event.name k=v k=v: text` into its event, fields and free text (the whole line if no event)."""
    event = _EVENT.match(message)
    if event is None:
        return None, {}, message
    fields: dict[str, str] = {}
    pos = event.end()
    while (field := _FIELD.match(message, pos)) is not None:
        key = field.group(1)
        fields[f"field_{key}" if key in _RESERVED else key] = field.group(2)
        pos = field.end()
    rest = message[pos:]
    text = rest[2:] if rest.startswith(": ") else rest.removeprefix(":").strip()
    return event.group(1), fields, text


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON: time, level, logger, event, the ids, the free text."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields, text = parse_message(record.getMessage())
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if event is not None:
            entry["event"] = event
        entry.update(fields)
        if text:
            entry["message"] = text
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii: a control character in a guild name stays an escape, never raw in the log.
        return json.dumps(entry, ensure_ascii=True)
