"""The console's pages, from its own jinja2 templates, autoescaped: server and member names are anyone's text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

TEMPLATES = Path(__file__).parent / "templates"


def when(value: datetime | None) -> str:
    """A stored time as operators read it in a table: UTC, to the minute."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def day(value: str | None) -> str:
    """The date of Discord's ISO 8601 text (a member's joined_at), or a dash."""
    if not value:
        return "—"
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d")
    except ValueError:
        return value[:10]


class AdminPages:
    """Renders web/admin/templates into responses."""

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["when"] = when
        self._env.filters["day"] = day

    def render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(**context)
        return web.Response(text=html, status=status, content_type="text/html")
