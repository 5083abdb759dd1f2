"""Fetch prefetch data the client did not send, from its `fhirServer` (CDS Hooks 2.0 §prefetch).

Searches follow Bundle `next` links, bounded in pages and kept on the same server (the access
token never goes anywhere else); every request has a timeout. A required key that cannot be
fetched is a 412; an optional one is skipped.
"""

import logging
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from cds_service.errors import CDSError, Issue
from cds_service.models import HookRequest
from cds_service.prefetch import PREFETCH, REQUIRED_KEYS, unusable

log = logging.getLogger(__name__)


class FetchError(Exception):
    """One prefetch query failed; the message says how (never with the token)."""


async def complete_prefetch(
    request: HookRequest, patient_id: str, allowed: list[str], timeout: float, max_pages: int
) -> dict[str, Any]:
    """The request's prefetch with every missing, null or OperationOutcome key fetched.

    `patient_id` is the validated context.patientId (a FHIR id: nothing else goes into a URL).
    Only from a fhirServer that starts with one of the `allowed` prefixes ("*": any).
    """
    prefetch = dict(request.prefetch or {})
    missing = [key for key in PREFETCH if unusable(prefetch.get(key))]
    if not missing or request.fhirServer is None:
        return prefetch
    base = str(request.fhirServer).rstrip("/") + "/"
    if not any(prefix == "*" or base.startswith(prefix) for prefix in allowed):
        refused = f"fhirServer {base} is not in this service's CDS_FHIR_SERVERS"
        required = [Issue(refused, f"prefetch.{k}") for k in missing if k in REQUIRED_KEYS]
        if required:
            raise CDSError(412, required)
        return prefetch
    headers = {"Accept": "application/fhir+json"}
    if request.fhirAuthorization is not None:
        headers["Authorization"] = f"Bearer {request.fhirAuthorization.access_token}"
    issues: list[Issue] = []
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
        for key in missing:
            query = PREFETCH[key].replace("{{context.patientId}}", patient_id)
            try:
                prefetch[key] = await _fetch(client, base, query, max_pages)
            except FetchError as exc:
                if key in REQUIRED_KEYS:
                    message = f"could not fetch {query} from fhirServer: {exc}"
                    issues.append(Issue(message, f"prefetch.{key}"))
                else:
                    log.warning("optional prefetch %s not fetched: %s", key, exc)
    if issues:
        raise CDSError(412, issues)
    return prefetch


async def _fetch(client: httpx.AsyncClient, base: str, query: str, max_pages: int) -> Any:
    """The resource, or the search Bundle with every page's entries merged into one."""
    page = await _get(client, urljoin(base, query))
    if page.get("resourceType") != "Bundle":
        return page
    first, entries = page, list(page.get("entry", []))
    for _ in range(max_pages - 1):
        next_url = _next_link(page, base)
        if next_url is None:
            break
        page = await _get(client, next_url)
        entries += page.get("entry", [])
    else:
        if _next_link(page, base) is not None:
            raise FetchError(f"more than {max_pages} pages of results")
    return {**first, "entry": entries, "link": []}


def _next_link(bundle: dict[str, Any], base: str) -> str | None:
    for link in bundle.get("link", []):
        if isinstance(link, dict) and link.get("relation") == "next":
            url = urljoin(base, str(link.get("url", "")))
            if urlsplit(url)[:2] != urlsplit(base)[:2]:
                raise FetchError("a next link points away from fhirServer")
            return url
    return None


async def _get(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        response = await client.get(url)
    except httpx.TimeoutException:
        raise FetchError("timed out") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}") from None
    if response.status_code != 200:
        raise FetchError(f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise FetchError("the answer is not JSON") from None
    if not isinstance(body, dict) or body.get("resourceType") == "OperationOutcome":
        raise FetchError("the answer is an OperationOutcome, not data")
    return body
