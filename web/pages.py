"""HTML pages from jinja2 templates, autoescaped: guild and user names are attacker-controlled text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

TEMPLATES = Path(__file__).parent / "templates"


class Pages:
    """Renders the templates in web/templates into responses."""

    STATIC_DIR = Path(__file__).parent / "static"

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(**context)
        return web.Response(text=html, status=status, content_type="text/html")

    def error(
        self, status: int, heading: str, message: str, *, offer_fresh_link: bool = False
    ) -> web.Response:
        return self.render(
            "error.html", status=status, heading=heading, message=message, offer_fresh_link=offer_fresh_link
        )
