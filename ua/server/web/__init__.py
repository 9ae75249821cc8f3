"""ua-server web console: project page, sharing, transfers and upload tokens in a browser.

Mounted under ``/console`` by :func:`setup` (alias :func:`setup_web`), which
``ua.server.app.make_app`` finds and calls itself (``Config.load_web``). All pages
are server-rendered (jinja2, autoescaped); the only script polls the project file list.
"""

from __future__ import annotations

from aiohttp import web

from .views import PREFIX, build_app


def setup_web(app: web.Application, service) -> None:
    async def to_console(request: web.Request) -> web.Response:
        raise web.HTTPFound(PREFIX + "/")

    # Registered before the sub-app so "/console" (no slash) reaches the redirect.
    app.router.add_get("/", to_console)
    app.router.add_get(PREFIX, to_console)
    app.add_subapp(PREFIX, build_app(service))


setup = setup_web  # the name make_app looks for

__all__ = ["setup", "setup_web"]
