"""Fetch prefetch data the client did not send, from its `fhirServer` (CDS Hooks 2.0 §prefetch).

Searches follow Bundle `next` links, bounded in pages and kept on the same server (the access
token never goes anywhere else); every request has a timeout. A required key that cannot be
fetched is a 412; an optional one is skipped. A search Bundle the client sent with a `next` link
(only its first page) is completed the same way; if it cannot be, it stays partial and the
cards say so.
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
    paged = [key for key in PREFETCH if key not in missing and _has_next(prefetch[key])]
    if not (missing or paged) or request.fhirServer is None:
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
        for key in paged:
            try:
                prefetch[key] = await _complete(client, base, prefetch[key], max_pages)
            except FetchError as exc:
                log.warning("prefetch %s stays partial (first page only): %s", key, exc)
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
    return await _complete(client, base, page, max_pages)


async def _complete(
    client: httpx.AsyncClient, base: str, first: dict[str, Any], max_pages: int
) -> dict[str, Any]:
    """The search Bundle `first` with the entries of every following page merged into it."""
    page, entries = first, _page_entries(first)
    for _ in range(max_pages - 1):
        next_url = _next_link(page, base)
        if next_url is None:
            break
        page = await _get(client, next_url)
        entries += _page_entries(page)
    else:
        if _next_link(page, base) is not None:
            raise FetchError(f"more than {max_pages} pages of results")
    return {**first, "entry": entries, "link": []}


def _page_entries(page: dict[str, Any]) -> list[Any]:
    entries = page.get("entry", [])
    if not isinstance(entries, list):
        raise FetchError("a search page's `entry` is not a list")
    return entries


def _links(bundle: Any) -> list[dict[str, Any]]:
    links = bundle.get("link") if isinstance(bundle, dict) else None
    return [link for link in links if isinstance(link, dict)] if isinstance(links, list) else []


def _has_next(value: Any) -> bool:
    """True for a search Bundle that holds one page of several (it has a `next` link)."""
    return any(link.get("relation") == "next" for link in _links(value))


def _next_link(bundle: dict[str, Any], base: str) -> str | None:
    for link in _links(bundle):
        if link.get("relation") == "next":
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
