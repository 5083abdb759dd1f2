"""Fetch prefetch data the client did not send, from its `fhirServer` (CDS Hooks 2.0 §prefetch).

The client's access token goes only to a fhirServer allowed for the caller (its issuer's
`fhir_servers`, compared by scheme, host, port and path), never to a loopback, private or
link-local address unless the deployment allows it, and never anywhere else: redirects are not
followed and `next` links must stay under the fhirServer. Searches follow `next` links, bounded
in pages; every request has a timeout. A required key that cannot be fetched is a 412 that names
the key but repeats nothing of the upstream answer (the log has it); an optional one is skipped.
A search Bundle the client sent with a `next` link (only its first page) is completed the same
way; if it cannot be, it stays partial and the cards say so. A key sent as `null` means the
client has no data for it (CDS Hooks 2.0.1): it is not fetched. The searches are the US Core
shapes `queries.py` derives from the rules, with a date window and `_count`.
"""

import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from cds_service.errors import CDSError, Issue
from cds_service.fhir_model import FHIR_ID
from cds_service.limits import unpaired_surrogate
from cds_service.models import HookRequest
from cds_service.prefetch import absent
from cds_service.queries import Queries
from cds_service.urls import within

log = logging.getLogger(__name__)
# httpx logs every request's URL at INFO, and a search URL names the patient: not in our logs.
logging.getLogger("httpx").setLevel(logging.WARNING)


class FetchError(Exception):
    """One prefetch query failed: `public` is safe to tell the client, the message is logged."""

    def __init__(self, detail: str, public: str = "no usable answer (see the service log)"):
        super().__init__(detail)
        self.public = public


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what logs and errors may say of a fhirServer (its
    path may name a tenant, its userinfo hold credentials)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


@dataclass(frozen=True)
class FetchPolicy:
    """Where and how much the service may fetch for one request."""

    fhir_servers: list[str]
    timeout: float
    max_pages: int
    allow_private: bool = False
    deadline: float = 10.0
    """All of one request's fetches together."""
    max_answer_bytes: int = 20_000_000
    """The largest answer (one search page or resource) read from the fhirServer."""
    max_reads: int = 50
    """The most Medications read one by one per prefetch key (when not `_include`d)."""


async def complete_prefetch(
    request: HookRequest, patient_id: str, policy: FetchPolicy, queries: Queries, today: date
) -> dict[str, Any]:
    """The request's prefetch with every absent or OperationOutcome key fetched (with the
    search `queries` gives for it as of `today`).

    `patient_id` is the validated context.patientId (a FHIR id: nothing else goes into a URL).
    """
    prefetch = dict(request.prefetch or {})
    if request.fhirServer is None:  # nothing can be fetched: no need to look for what is missing
        return prefetch
    sent = queries.sent(key for key in prefetch if not absent(prefetch, key))
    missing = [key for key in queries.templates if key not in sent]
    paged = [key for key in queries.readable if key in prefetch and _has_next(prefetch[key])]
    unresolved = any(_unresolved_medicines(value) for value in prefetch.values())
    required = queries.required
    if not (missing or paged or unresolved):
        return prefetch
    base = str(request.fhirServer).rstrip("/") + "/"
    refused = await _refusal(base, policy)
    if refused is not None:
        log.warning("fhirServer at %s refused", origin(base))  # no path, no credentials
        refusals = [Issue(refused, f"prefetch.{k}") for k in missing if k in required]
        if refusals:
            raise CDSError(412, refusals)
        return prefetch
    try:
        headers = _headers(request)
    except UnicodeEncodeError:
        issue = "the fhirAuthorization access_token is not a valid HTTP header value"
        raise CDSError.of(400, issue, "fhirAuthorization.access_token") from None
    issues: list[Issue] = []

    async def complete(key: str, client: httpx.AsyncClient) -> None:
        try:
            prefetch[key] = await _complete(client, base, prefetch[key], policy)
        except FetchError as exc:
            log.warning("prefetch %s stays partial (first page only): %s", key, exc)

    async def fetch(key: str, client: httpx.AsyncClient) -> None:
        query = queries.search(key, patient_id, today)
        try:
            prefetch[key] = await _fetch(client, base, query, policy)
        except FetchError as exc:
            # The log names the key and its template, never the query: it names the patient.
            log.warning("prefetch %s (%s) not fetched: %s", key, queries.templates[key], exc)
            if key in required:
                message = f"could not fetch {query} from fhirServer: {exc.public}"
                issues.append(Issue(message, f"prefetch.{key}"))

    async with httpx.AsyncClient(timeout=policy.timeout, headers=headers) as client:
        # All keys at once, under one deadline for the whole request: a server that trickles
        # bytes or hangs costs the deadline once, not a timeout per read and per key.
        with anyio.move_on_after(policy.deadline) as budget:
            async with anyio.create_task_group() as group:
                for key in paged:
                    group.start_soon(complete, key, client)
                for key in missing:
                    group.start_soon(fetch, key, client)
            await _add_medicines(client, base, prefetch, policy)
    if budget.cancelled_caught:
        late = [key for key in missing if absent(prefetch, key)]
        log.warning("fhirServer fetches cut at the %.0f s deadline: %s", policy.deadline, late)
        message = f"not fetched within the {policy.deadline:g} s deadline"
        issues += [Issue(message, f"prefetch.{k}") for k in late if k in required]
    if issues:
        raise CDSError(412, sorted(issues, key=lambda issue: str(issue.expression)))
    return prefetch


def _unresolved_medicines(value: Any) -> set[str]:
    """Ids of the Medications a search Bundle's entries point at (`Medication/{id}`) that
    neither the Bundle nor the entry itself (contained) holds: a client or server that did
    not answer `_include=MedicationRequest:medication`."""
    entries = value.get("entry") if isinstance(value, dict) else None
    resources: list[dict[str, Any]] = [
        entry["resource"]
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
    ]
    held = {r.get("id") for r in resources if r.get("resourceType") == "Medication"}
    wanted: set[str] = set()
    for resource in resources:
        reference = resource.get("medicationReference")
        pointer = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(pointer, str) and pointer.startswith("Medication/"):
            medication_id = pointer.removeprefix("Medication/")
            if FHIR_ID.fullmatch(medication_id) and medication_id not in held:
                wanted.add(medication_id)
    return wanted


async def _add_medicines(
    client: httpx.AsyncClient, base: str, prefetch: dict[str, Any], policy: FetchPolicy
) -> None:
    """Read the Medications the prefetch's medicine entries point at but do not hold, and add
    each to its Bundle as an `_include`d entry; one that cannot be read is logged and left
    out (the entry then counts by its text only)."""
    for key, value in list(prefetch.items()):
        included = []
        for medication_id in sorted(_unresolved_medicines(value))[: policy.max_reads]:
            url = urljoin(base, f"Medication/{medication_id}")
            try:
                medication = await _get(client, url, policy.max_answer_bytes)
            except FetchError as exc:
                log.warning("prefetch %s: a Medication it points at not read: %s", key, exc)
                continue
            if medication.get("resourceType") == "Medication":
                included.append({"resource": medication, "search": {"mode": "include"}})
        if included:
            prefetch[key] = {**value, "entry": [*value["entry"], *included]}


def _headers(request: HookRequest) -> dict[str, str]:
    headers = {"Accept": "application/fhir+json"}
    if request.fhirAuthorization is not None:
        token = request.fhirAuthorization.access_token
        token.encode("ascii")  # httpx would fail later, and less clearly
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _refusal(base: str, policy: FetchPolicy) -> str | None:
    """Why the service will not fetch from `base` (None: it may)."""
    if not any(within(base, prefix) for prefix in policy.fhir_servers):
        return f"fhirServer at {origin(base)} is not one this caller may send the service to"
    if urlsplit(base).scheme not in ("http", "https"):
        return "fhirServer is not an http(s) URL"
    if not policy.allow_private and await _private(urlsplit(base).hostname or ""):
        return f"fhirServer at {origin(base)} is on a loopback, private or link-local address"
    return None


async def _private(host: str) -> bool:
    """True when `host` is, or resolves to, a non-public address (or does not resolve)."""
    try:
        infos = await anyio.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return True
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return any(not address.is_global for address in addresses)


async def _fetch(client: httpx.AsyncClient, base: str, query: str, policy: FetchPolicy) -> Any:
    """The resource, or the search Bundle with every page's entries merged into one."""
    page = await _get(client, urljoin(base, query), policy.max_answer_bytes)
    if page.get("resourceType") != "Bundle":
        return page
    return await _complete(client, base, page, policy)


async def _complete(
    client: httpx.AsyncClient, base: str, first: dict[str, Any], policy: FetchPolicy
) -> dict[str, Any]:
    """The search Bundle `first` with the entries of every following page merged into it."""
    page, entries = first, _page_entries(first)
    for _ in range(policy.max_pages - 1):
        next_url = _next_link(page, base)
        if next_url is None:
            break
        page = await _get(client, next_url, policy.max_answer_bytes)
        entries += _page_entries(page)
    else:
        if _next_link(page, base) is not None:
            message = f"more than {policy.max_pages} pages of results"
            raise FetchError(message, public=message)
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
            url = within(urljoin(base, str(link.get("url", ""))), base)  # as it will be sent
            if url is None:
                message = "a next link points away from fhirServer"
                raise FetchError(message, public=message)
            return url
    return None


async def _get(client: httpx.AsyncClient, url: str, max_bytes: int) -> dict[str, Any]:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > max_bytes:
                    raise FetchError(f"the answer is larger than {max_bytes} bytes")
    except httpx.TimeoutException:
        raise FetchError("timed out") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}") from None
    if unpaired_surrogate(bytes(content)):
        raise FetchError("the answer escapes an unpaired UTF-16 surrogate")
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise FetchError("the answer is not JSON (or nested too deep)") from None
    if not isinstance(body, dict) or body.get("resourceType") == "OperationOutcome":
        raise FetchError("the answer is an OperationOutcome, not data")
    return body
