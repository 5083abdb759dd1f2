"""Security headers on every response (ASGI middleware).

Every response: `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`. JSON (cards,
stored cards, errors) also gets `Cache-Control: no-store`: it may hold patient data. The service's
own pages (playground, referral review, committee dashboard, API docs) get a
Content-Security-Policy that allows only the service's own scripts and styles; `frame_ancestors`
says which EHR origins may frame them (the SMART review page runs inside the EHR).
"""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PAGES = ("/playground", "/review", "/admin", "/docs")


class SecurityHeaders:
    def __init__(
        self, app: ASGIApp, frame_ancestors: list[str], review_connect: list[str] | None = None
    ) -> None:
        """`review_connect`: the origins the SMART review page may call (its FHIR servers and
        their authorization servers) besides its own, added to its `connect-src`."""
        self.app = app
        ancestors = " ".join(frame_ancestors) or "'none'"
        self.policy = (
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            f"frame-ancestors {ancestors}"
        )
        connect = " ".join(["'self'", *(review_connect or [])])
        self.review_policy = f"{self.policy}; connect-src {connect}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"] in _PAGES

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if headers.get("content-type", "").startswith("application/json"):
                    headers["Cache-Control"] = "no-store"
                if page:
                    review = scope["path"] == "/review"
                    headers["Content-Security-Policy"] = (
                        self.review_policy if review else self.policy
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)
