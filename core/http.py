"""The one retrying HTTP layer: a retry policy, retried requests, and STAC searches with paging guards.

Every HTTP request the pipeline makes to a STAC API goes through :func:`send_with_retries`:
HTTP 429/5xx, timeouts, connection errors and truncated or non-JSON bodies (for JSON endpoints) are
retried with exponential backoff, honouring ``Retry-After``, within ``max_attempts`` and a wall-clock
``budget_s`` per request; then :class:`HttpError` names the endpoint, the attempts and the last status.
A 2xx answer whose body is not JSON (a proxy's or a portal's HTML page) is tried at most
``NON_JSON_ATTEMPTS`` times: a passing proxy page goes away, a wrong URL or a sign-in portal answers it
every time and should fail in seconds, not after the whole backoff. Other 4xx answers fail at once.
Every request has a connect and a read timeout.

:func:`search_items` pages through a STAC ``/search`` lazily with pystac-client's I/O; a page made only of
items already seen (a cursor bug CMR-STAC had) is re-requested, and if it repeats again the search fails
with a clear error: a list is never silently truncated.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
NON_JSON_ATTEMPTS = 3  # tries of a request answered 2xx with a body that is not JSON (see the module doc)


class HttpError(RuntimeError):
    """A request that failed for good (non-retryable status, or retries exhausted); names the endpoint."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one HTTP request.

    ``max_attempts`` per request (first try included); waits ``backoff_s * 2**(n-1)`` (+ up to 10 %
    jitter, at most ``max_backoff_s``) or the server's ``Retry-After``; a request with its retries may
    take at most ``budget_s`` seconds of wall time (waits and attempts together), so a dead endpoint fails
    within that budget. ``connect_timeout_s`` / ``timeout_s``: connect and read timeout of one attempt.
    """

    max_attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    budget_s: float = 110.0
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)

    @classmethod
    def from_any(cls, value: RetryPolicy | dict[str, Any] | None) -> RetryPolicy:
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        names = {f.name for f in fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"unknown retry options {sorted(unknown)}; known: {sorted(names)}")
        if "retry_statuses" in value:
            value = {**value, "retry_statuses": tuple(value["retry_statuses"])}
        return cls(**value)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        parsed = parse_retry_after(retry_after)
        if parsed is not None:
            return max(0.0, parsed)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (1 + 0.1 * random.random())

    @property
    def timeouts(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.timeout_s)

    def describe(self) -> str:
        return f"{self.max_attempts} attempts / {self.budget_s:g} s"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


@dataclass
class RetryStats:
    """Counters of one client: retried attempts and seconds spent waiting."""

    retries: int = 0
    waited_s: float = 0.0
    log: list[str] = field(default_factory=list)


def _attempt(session: Any, prepped: Any, policy: RetryPolicy, expect_json: bool,
             remaining_s: float | None = None) -> tuple[Any, str, bool | int]:
    """One attempt: (response or None, why it failed, retryable: False, True, or the number of attempts
    this kind of failure gets when fewer than the policy's). Its timeouts never exceed ``remaining_s``
    (what is left of the request's budget), so a request with its retries ends within the budget."""
    import requests

    settings = session.merge_environment_settings(prepped.url, {}, True, True, None)  # stream: body read below
    connect, read = policy.timeouts
    if remaining_s is not None:
        connect, read = (max(0.05, min(t, remaining_s)) for t in (connect, read))
    broken = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
    try:
        resp = session.send(prepped, timeout=(connect, read), **settings)
    except broken as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:200]}", True
    try:
        body = resp.content  # read the whole body now: a truncated body raises here
    except broken as exc:
        resp.close()
        return resp, (f"HTTP {resp.status_code} with a truncated body ({resp.headers.get('Content-Length', '?')} "
                      f"bytes announced; {type(exc).__name__}: {str(exc)[:160]})"), True
    if not 200 <= resp.status_code < 300:
        why = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
        return resp, why, resp.status_code in policy.retry_statuses
    if expect_json:
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError):
            ctype = resp.headers.get("Content-Type", "?")
            return resp, (f"HTTP {resp.status_code} with a body that is not JSON ({ctype}, {len(body)} bytes: "
                          f"{body[:80]!r})"), NON_JSON_ATTEMPTS
    return resp, "", False


def send_with_retries(session: Any, request: Any, policy: RetryPolicy, *, expect_json: bool = False,
                      stats: RetryStats | None = None) -> Any:
    """Send a ``requests.Request`` with ``policy``'s retries; the successful response, else :class:`HttpError`."""
    prepped = session.prepare_request(request)
    method, url = prepped.method, prepped.url
    t0 = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        resp, why, retryable = _attempt(session, prepped, policy, expect_json, policy.budget_s - (time.monotonic() - t0))
        if not why:
            return resp
        status = resp.status_code if resp is not None else None
        if retryable is False:
            raise HttpError(f"{method} {url} failed: {why}", url=url, status=status)
        limit = policy.max_attempts if retryable is True else min(policy.max_attempts, retryable)
        wait = policy.delay(attempt, resp.headers.get("Retry-After") if resp is not None else None)
        spent = time.monotonic() - t0
        if attempt >= limit or spent + wait >= policy.budget_s:
            raise HttpError(f"{method} {url} failed after {attempt} attempts in {spent:.1f} s (retry budget "
                            f"{policy.describe()}): last error {why}", url=url, status=status)
        log.warning("%s %s: %s; retry %d in %.1f s", method, url, why, attempt, wait)
        if stats is not None:
            stats.retries += 1
            stats.waited_s += wait
        time.sleep(wait)


def retrying_stac_io(policy: RetryPolicy) -> Any:
    """A pystac-client ``StacApiIO`` whose every request follows ``policy`` (urllib3's own retries off)."""
    import requests
    from pystac_client.stac_api_io import StacApiIO

    class RetryingStacApiIO(StacApiIO):
        def __init__(self) -> None:
            super().__init__(timeout=policy.timeouts, max_retries=None)
            self.stats = RetryStats()

        def update(self, *args: Any, **kwargs: Any) -> None:  # Client.open resets the timeout to None
            kwargs["timeout"] = policy.timeouts
            super().update(*args, **kwargs)

        def request(self, href: str, method: str | None = None, headers: dict[str, str] | None = None,
                    parameters: dict[str, Any] | None = None) -> str:
            method = (method or "GET").upper()
            if method in ("POST", "PUT", "PATCH"):
                req = requests.Request(method=method, url=href, headers=headers, json=parameters)
            else:
                req = requests.Request(method=method, url=href, headers=headers, params=deepcopy(parameters) or {})
            resp = send_with_retries(self.session, req, policy, expect_json=True, stats=self.stats)
            return resp.content.decode("utf-8")

    return RetryingStacApiIO()


@dataclass
class PageStats:
    """Paging counters of one search."""

    pages: int = 0
    n_returned: int = 0
    duplicates: int = 0
    repeated_pages: int = 0


def _next_link(page: dict[str, Any]) -> dict[str, Any] | None:
    return next((link for link in page.get("links") or [] if link.get("rel") == "next"), None)


def _request_link(io: Any, link: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    method = (link.get("method") or "GET").upper()
    params = {**body, **(link.get("body") or {})} if link.get("merge") else (link.get("body") or None)
    if method == "GET":
        params = None  # a GET next link carries its state in the href
    return json.loads(io.request(link["href"], method=method, headers=link.get("headers"), parameters=params))


def iter_pages(io: Any, search_url: str, body: dict[str, Any], stats: PageStats,
               repeat_retries: int = 2) -> Iterator[list[dict[str, Any]]]:
    """Lazily yield the NEW unique items of each page of a POST search (paging guard, see module doc)."""
    seen: set[str] = set()
    link: dict[str, Any] | None = {"href": search_url, "method": "POST", "body": body}
    while link is not None and stats.pages < MAX_PAGES:
        for _ in range(repeat_retries + 1):
            page = _request_link(io, link, body) if stats.pages else _first(io, search_url, body)
            feats = page.get("features") or []
            if any("id" not in f for f in feats):
                bad = next(f for f in feats if "id" not in f)
                raise HttpError(f"{search_url}: an item without id: {str(bad)[:200]}", url=search_url)
            if not feats or any(f["id"] not in seen for f in feats):
                break
            stats.repeated_pages += 1
            log.warning("%s: page %d repeated only items already seen; re-requesting", search_url, stats.pages + 1)
        else:
            raise HttpError(f"{search_url}: page {stats.pages + 1} repeated items already seen {repeat_retries + 1} "
                            "times (a paging bug of the server); the search was stopped rather than return a "
                            "truncated list", url=search_url)
        stats.pages += 1
        stats.n_returned += len(feats)
        new = []
        for f in feats:
            if f["id"] in seen:
                stats.duplicates += 1
                continue
            seen.add(f["id"])
            new.append(f)
        yield new
        link = _next_link(page)


def _first(io: Any, search_url: str, body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(io.request(search_url, method="POST", parameters=body))


def open_stac(stac_url: str, policy: RetryPolicy) -> tuple[Any, Any]:
    """(pystac-client ``Client``, its retrying I/O) for ``stac_url``; :class:`HttpError` when unreachable."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    io = retrying_stac_io(policy)
    try:
        client = Client.open(stac_url, stac_io=io, timeout=policy.timeouts)
    except APIError as exc:
        raise HttpError(f"{stac_url}: cannot open the STAC API: {exc}", url=stac_url) from exc
    except HttpError:
        raise
    except Exception as exc:  # pystac's own parse errors: not a STAC API root
        cause = _http_cause(exc)
        if cause is not None:  # pystac wrapped our own error (e.g. in a STACError): keep its message
            raise cause from exc
        raise HttpError(f"{stac_url}: not a STAC API root ({type(exc).__name__}: {exc})", url=stac_url) from exc
    return client, io


def _http_cause(exc: BaseException) -> HttpError | None:
    seen = 0
    inner: BaseException | None = exc
    while inner is not None and seen < 8:
        if isinstance(inner, HttpError):
            return inner
        inner, seen = inner.__cause__ or inner.__context__, seen + 1
    return None


def search_items(client: Any, io: Any, *, collection: str, bbox: list[float], datetime_range: str, limit: int,
                 query: dict[str, Any] | None = None, max_items: int | None = None,
                 stats: PageStats | None = None) -> Iterator[dict[str, Any]]:
    """Lazily yield the unique items of a STAC item search (POST) on a client from :func:`open_stac`."""
    search = client.search(collections=[collection], bbox=bbox, datetime=datetime_range, limit=limit,
                           method="POST", **({"query": query} if query else {}))
    stats = stats if stats is not None else PageStats()
    n = 0
    for new in iter_pages(io, search.url, search.get_parameters(), stats):
        for item in new:
            yield item
            n += 1
            if max_items and n >= max_items:
                return


def search_boxes(client: Any, io: Any, *, collection: str, bboxes: list[list[float]], datetime_range: str,
                 limit: int, query: dict[str, Any] | None = None, max_items: int | None = None,
                 stats: PageStats | None = None) -> Iterator[dict[str, Any]]:
    """:func:`search_items` over several boxes (an area split at the antimeridian is searched as two, see
    :func:`core.area.search_bboxes`): unique items in box order, an item found in two boxes once."""
    seen: set[str] = set()
    for bbox in bboxes:
        left = None if not max_items else max_items - len(seen)
        for item in search_items(client, io, collection=collection, bbox=list(bbox), datetime_range=datetime_range,
                                 limit=limit, query=query, max_items=left, stats=stats):
            if item["id"] in seen:
                if stats is not None:
                    stats.duplicates += 1
                continue
            seen.add(item["id"])
            yield item
        if max_items and len(seen) >= max_items:
            return


def conforms_to_query(client: Any) -> bool:
    """Whether a STAC API root declares the ``item-search#query`` conformance class."""
    return any(c.endswith("item-search#query") for c in (client.to_dict().get("conformsTo") or []))
