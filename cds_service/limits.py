"""Request limits as ASGI middleware: admission (a bounded number of calls inside the app), 415
for a body that is not JSON, 413 for one too large, 400 for one whose text is not valid Unicode,
408 for one that does not arrive in time, and cancellation when the client goes away.

Checked before the body is parsed: a declared Content-Length over the limit is refused unread,
and a streamed body is buffered only up to the limit. JSON may escape half of a UTF-16 surrogate
pair (`\ud800`), which no Unicode text holds: it could not be stored, logged or echoed, so it is
refused here, before anything reads it.

Time: the whole body must arrive within `body_timeout` seconds of the middleware starting to
read it (after admission: a client that trickles its body holds a slot for that long at most).
Then, while the app works on the call, the server's `receive` is watched: a client that
disconnects before its response is complete cancels the app (its fhirServer fetches stop).
The app's `receive` gets the buffered body, then waits for that disconnect.
"""

import logging
import re
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_service.errors import Issue, outcome_response

log = logging.getLogger(__name__)

_JSON_TYPES = ("application/json", "application/fhir+json")
_ESCAPE = rb"(?:^|[^\\])(?:\\\\)*"  # an escape starts after an even run of backslashes
_UNPAIRED_SURROGATE = re.compile(
    _ESCAPE + rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|" + _ESCAPE + rb"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def unpaired_surrogate(json_text: bytes) -> bool:
    """True when JSON text escapes a lone UTF-16 surrogate (not valid Unicode once decoded).

    Most bodies hold no backslash: a one-byte search (memchr) says so in a hundredth of the time
    of the two-byte one (185 KB: 2 us against 161 us)."""
    return (
        b"\\" in json_text
        and b"\\u" in json_text
        and _UNPAIRED_SURROGATE.search(json_text) is not None
    )


def _is_call(scope: Scope, prefix: str) -> bool:
    """A POST under `prefix`: a CDS Hooks call or its feedback."""
    post: bool = scope["type"] == "http" and scope["method"] == "POST"
    return post and str(scope["path"]).startswith(prefix)


class _ClientGone(Exception):
    """The client disconnected before its whole body arrived."""


class RequestLimits:
    """For POSTs under `prefix`: 415 unless the body is JSON, 413 past `max_body_bytes`, 408
    unless the whole body arrives within `body_timeout` seconds; the app is cancelled when the
    client disconnects before its response is complete."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        prefix: str,
        on_reject: Callable[[int], None] = lambda status: None,
        body_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.prefix = prefix
        self.on_reject = on_reject  # told the status of each refusal (for the metrics)
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_call(scope, self.prefix):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in _JSON_TYPES:
            message = f"Content-Type must be application/json, not {media_type or 'missing'!r}"
            await self._refuse(415, message, scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await self._refuse(413, self._too_large(), scope, receive, send)
            return
        try:
            with anyio.move_on_after(self.body_timeout) as timer:
                body = await self._read(receive)
        except _ClientGone:
            log.info("client disconnected before sending its whole body")
            return
        if timer.cancelled_caught:
            message = f"the request body did not arrive within {self.body_timeout:g} s"
            await self._refuse(408, message, scope, receive, send, {"Connection": "close"})
            return
        if body is None:
            await self._refuse(413, self._too_large(), scope, receive, send)
            return
        if unpaired_surrogate(body):
            message = "the body escapes an unpaired UTF-16 surrogate (\\uD800-\\uDFFF): not text"
            await self._refuse(400, message, scope, receive, send)
            return
        await _cancelled_on_disconnect(self.app, scope, body, receive, send)

    async def _refuse(
        self,
        status: int,
        message: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.on_reject(status)
        await outcome_response(status, [Issue(message)], headers)(scope, receive, send)

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_body_bytes} bytes"

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (bounded buffering); raises
        _ClientGone when the client disconnects first."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _cancelled_on_disconnect(
    app: ASGIApp, scope: Scope, body: bytes, receive: Receive, send: Send
) -> None:
    """Run the app on the buffered `body`, cancelled if the client disconnects before the
    response is complete. The server's `receive` is read only by the watcher: once the body is
    in, its next message is `http.disconnect` (the client left, or the response is complete)."""
    gone = anyio.Event()
    responded = False  # the last body message is sent: a disconnect now ends a normal exchange
    error: Exception | None = None

    async def sending(message: Message) -> None:
        nonlocal responded
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            responded = True
        await send(message)

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                await anyio.lowlevel.checkpoint()  # nothing else comes after the body
            gone.set()
            if not responded:
                log.info("client disconnected before its response: the call is cancelled")
                group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            await app(scope, _replay(body, gone), sending)
        except Exception as exc:  # raised as is below, not inside the task group's group
            error = exc
        group.cancel_scope.cancel()  # the app is done: stop watching
    if error is not None:
        raise error


def _replay(body: bytes, gone: anyio.Event) -> Callable[[], Awaitable[Message]]:
    """Hand the buffered body to the app, then wait for the client's disconnect (seen by the
    watcher, which alone reads the server's `receive`)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            await gone.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class Admission:
    """For POSTs under `prefix`: at most `in_flight` inside the app per worker; the rest wait
    before their body is read or parsed (so memory and garbage stay flat under load), and past
    `queued` waiting get 503 with Retry-After."""

    def __init__(
        self,
        app: ASGIApp,
        in_flight: int,
        queued: int,
        prefix: str,
        on_reject: Callable[[int], None] = lambda status: None,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.queued = queued
        self.on_reject = on_reject
        self._slots = anyio.Semaphore(in_flight)
        self._waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_call(scope, self.prefix):
            await self.app(scope, receive, send)
            return
        if self._slots.value == 0 and self._waiting >= self.queued:
            self.on_reject(503)
            busy = [Issue("the service is busy; retry shortly")]
            await outcome_response(503, busy, {"Retry-After": "1"})(scope, receive, send)
            return
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
