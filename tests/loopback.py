"""The app under uvicorn on loopback, in this process: for tests that need real HTTP."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from cds_service.app import create_app
from cds_service.settings import Settings
from tests.postgres import free_port


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread, until the block ends."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
