"""CDS Hooks 2.0: discovery, service calls and feedback (JWT-authenticated)."""

from typing import Any

import orjson
from fastapi import APIRouter, Response

from cds_service.deps import CDS, Client, ServiceHook
from cds_service.errors import OperationOutcome
from cds_service.models import CDSResponse, Discovery, FeedbackRequest, HookRequest
from cds_service.routes import OrjsonRoute

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OperationOutcome, "description": description}
    for status, description in (
        (400, "Malformed JSON, missing fields or invalid FHIR; the issue names the path"),
        (401, "Missing or invalid JWT (no details given)"),
        (404, "Unknown service"),
        (412, "Required prefetch data is missing and cannot be obtained"),
        (413, "Request body too large, or the record over the evaluation-size budget"),
        (415, "Request body is not JSON"),
        (503, "Busy or the database is unavailable; retry after Retry-After seconds"),
    )
}

router = APIRouter(prefix="/cds-services", tags=["CDS Hooks"], route_class=OrjsonRoute)


@router.get(
    "",
    response_model=Discovery,
    response_model_exclude_none=True,
    responses={401: ERRORS[401]},
)
async def discovery(service: CDS, _: Client) -> Discovery:
    """CDS Hooks discovery: one service per hook."""
    return service.discovery()


@router.post(
    "/{service_id}",
    response_model=CDSResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def call(caller: Client, hook: ServiceHook, body: HookRequest, service: CDS) -> Response:
    """Evaluate a CDS Hooks request and answer with cards."""
    # Already checked by the response models: no second validation on the way out.
    answer = await service.evaluate(hook, body, caller)
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post(
    "/{service_id}/feedback",
    responses={**ERRORS, 200: {"description": "Feedback stored (repeats are no-ops)"}},
)
async def feedback(
    _: Client, hook: ServiceHook, body: FeedbackRequest, service: CDS
) -> dict[str, int]:
    """Store the outcome of cards this service issued (CDS Hooks feedback)."""
    return {"received": await service.feedback(hook, body)}
