"""uvicorn's httptools HTTP/1.1 protocol with a header timeout, which uvicorn lacks.

A connection must complete its request headers within `CDS_HEADER_TIMEOUT_SECONDS` of opening,
and each later request (keep-alive) within that time of its first byte; otherwise it is closed.
Without this, a client that sends half its headers, or nothing at all, holds its connection and
its buffers for as long as it likes (uvicorn's keep-alive timeout runs only between requests,
and any byte cancels it). The body has its own timeout, in `limits.RequestLimits`.

`cds-service serve` passes the class to uvicorn (`http=HeaderTimeoutProtocol`).
"""

import asyncio
import functools
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from cds_service.settings import Settings

log = logging.getLogger(__name__)


@functools.cache
def header_timeout_seconds() -> float:
    """`CDS_HEADER_TIMEOUT_SECONDS`, read once per process: uvicorn's workers are processes
    that import this module anew and read their settings from the environment, as the app does."""
    return Settings().header_timeout_seconds


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request headers are late."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        header_timeout: float | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout_seconds() if header_timeout is None else header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's headers are due from now, whether or not bytes come

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a later request on a kept-alive connection: due from its first byte

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        """Start the clock unless it runs already (more bytes do not buy more time)."""
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
            log.info(
                "connection from %s closed: request headers not complete within %g s",
                client,
                self.header_timeout,
            )
            self.transport.close()
