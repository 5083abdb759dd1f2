"""What routes get through `Depends`: the wiring `create_app` put on the app, the caller.

The dependencies are `async def` though they never wait: FastAPI runs a plain `def` one in a
worker thread, a hop per dependency per request.
"""

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from cds_service.auth import Authenticator
from cds_service.hooks import Hook
from cds_service.metrics import Metrics
from cds_service.service import Caller, CDSService
from cds_service.settings import Settings
from cds_service.storage import Store


@dataclass(frozen=True)
class Wiring:
    """The objects of one app, built once by `create_app` (kept in `app.state.wiring`)."""

    settings: Settings
    service: CDSService
    store: Store
    metrics: Metrics
    authenticator: Authenticator


async def wiring(request: Request) -> Wiring:
    return cast(Wiring, request.app.state.wiring)


Wired = Annotated[Wiring, Depends(wiring)]


async def cds_service(wired: Wired) -> CDSService:
    return wired.service


CDS = Annotated[CDSService, Depends(cds_service)]


async def caller(request: Request, wired: Wired) -> Caller:
    """The authenticated CDS client (a signed JWT on every call, CDS Hooks 2.0); 401 otherwise.

    With authentication off (try-it mode) everyone is a caller with the configured fhirServers.
    The token's audience is the configured public base URL and the path, never the request's
    Host; the card links use the request's Host only when no public base URL is configured.
    """
    settings = wired.settings
    base = (settings.public_base_url or str(request.base_url)).rstrip("/")
    if settings.auth_disabled:
        return Caller(settings.fhir_servers, base)
    authorization = request.headers.get("authorization")
    servers = await wired.authenticator.fhir_servers(authorization, request.url.path)
    return Caller(servers, base)


Client = Annotated[Caller, Depends(caller)]


async def known_hook(service_id: str, service: CDS) -> Hook:
    """The hook the path's service id answers; 404 for an unknown one."""
    return service.hook(service_id)


ServiceHook = Annotated[Hook, Depends(known_hook)]
