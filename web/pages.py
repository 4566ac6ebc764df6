"""HTML pages from jinja2 templates, autoescaped: guild and user names are attacker-controlled text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

TEMPLATES = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
# Read once: a handful of small files. Looking a name up here (not on disk) means no path, however long
# or strange, reaches the file system.
STATIC_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}


async def static_file(request: web.Request) -> web.FileResponse:
    """GET /static/{name}: one of our files, or 404."""
    path = STATIC_FILES.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


class Pages:
    """Renders the templates in web/templates into responses."""

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(**context)
        return web.Response(text=html, status=status, content_type="text/html")

    def error(self, status: int, heading: str, message: str, *, retry_url: str | None = None) -> web.Response:
        """An error page; `retry_url` offers a "Start again" button (a fresh /link, or the same invite)."""
        return self.render("error.html", status=status, heading=heading, message=message, retry_url=retry_url)
