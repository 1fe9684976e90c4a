"""The operator console: a live web view of the fleet, tasks, pipelines, stateful tasks,
sensors, placement decisions and devices, served by the controller at ``/``.

Server-rendered pages, one small script and server-sent events: nothing to build, no
front-end framework, and every asset served by the controller itself (edge sites have no
internet). Behind the same tenant tokens as the API (a session cookie holding the token).
"""

from fades.console.routes import mount

__all__ = ["mount"]
