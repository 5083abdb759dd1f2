"""Security headers on every response (ASGI middleware), whatever its path or route.

Every response: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and a
Content-Security-Policy that allows only the service's own scripts and styles, with
`frame_ancestors` saying which EHR origins may frame a page (the SMART review page runs inside
the EHR). The policy is set here for every response, not per page or route, so no second path to
a page (`/static/review.html` beside `/review`) serves it without one. JSON (cards, stored cards,
errors) also gets `Cache-Control: no-store`: it may hold patient data.

A page that needs more (the SMART review page calls the EHR's FHIR and authorization servers)
gets its extra sources by exact path, merged into the same policy.
"""

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BASE = {
    "default-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
}


def _policy(directives: Mapping[str, str]) -> str:
    return "; ".join(f"{name} {sources}" for name, sources in directives.items())


class SecurityHeaders:
    def __init__(
        self,
        app: ASGIApp,
        frame_ancestors: list[str],
        page_sources: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`page_sources`: per exact path, CSP directives that replace the base policy's."""
        self.app = app
        base = {**_BASE, "frame-ancestors": " ".join(frame_ancestors) or "'none'"}
        self.policy = _policy(base)
        self.page_policies = {
            path: _policy(base | dict(sources)) for path, sources in (page_sources or {}).items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.page_policies.get(scope["path"], self.policy)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["Content-Security-Policy"] = policy
                if headers.get("content-type", "").startswith("application/json"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
