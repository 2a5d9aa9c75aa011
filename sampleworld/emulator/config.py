"""Parameters of the Earthdata emulator: fault knobs, link shape and the whole configuration.

All three are frozen dataclasses that round-trip through plain JSON (``to_dict`` / ``from_dict``), so the
same configuration drives the in-process servers and the ``python -m sampleworld.emulator serve`` process.
Units: seconds (``*_s``), bytes per second (``*_bytes_per_s``, 1 MB/s = 1e6), fractions in [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_KINDS = ("login", "data", "signed")
"""The three emulated hosts: Earthdata Login (URS), the protected data host (TEA), the signed host (S3)."""

DEFAULT_ADDRESSES = {"login": "127.0.0.1", "data": "127.0.0.2", "signed": "127.0.0.3"}
"""One loopback address per host, so cookies and ``~/.netrc`` entries (both keyed by host name, not port)
stay as separate as they are for urs.earthdata.nasa.gov, data.*.earthdatacloud.nasa.gov and S3."""


@dataclass(frozen=True)
class Faults:
    """Seeded fault injection for one host. Each request draws one uniform number from a stream keyed by
    (``seed``, host kind, request number); the fractions below are consecutive slices of [0, 1), so at
    most one fault hits a request and their sum must be <= 1. The same request sequence gives the same
    faults. Fractions are of requests; times in seconds.

    - ``error_5xx``: answer one of ``statuses_5xx`` (chosen by a second seeded draw) with a short body.
    - ``throttle_429``: answer 429 with ``Retry-After: retry_after_s`` (whole seconds, as HTTP allows).
    - ``reset_before``: close the connection (TCP RST) before sending anything.
    - ``reset_mid``: send the headers and ``truncate_fraction`` of the body, then RST.
    - ``truncate``: send the headers and ``truncate_fraction`` of the body (fewer bytes than
      Content-Length), then close normally (FIN).
    - ``slow``: sleep ``slow_s`` before answering (then answer normally if the client is still there).
    - STAC proxy only: ``repeat_page`` answers a paging request (one carrying ``skip``/``page``/``token``
      /``cursor``/``next``/``search_after``) with the previous search page's body; ``html_error`` answers
      an HTML error page (``html_status``, 200 or 502) like a load balancer or maintenance page.
    """

    seed: int = 0
    error_5xx: float = 0.0
    statuses_5xx: tuple[int, ...] = (500, 502, 503)
    throttle_429: float = 0.0
    retry_after_s: int = 1
    reset_before: float = 0.0
    reset_mid: float = 0.0
    truncate: float = 0.0
    truncate_fraction: float = 0.5
    slow: float = 0.0
    slow_s: float = 5.0
    repeat_page: float = 0.0
    html_error: float = 0.0
    html_status: int = 502

    def __post_init__(self) -> None:
        fracs = {k: getattr(self, k) for k in FAULT_KINDS}
        bad = {k: v for k, v in fracs.items() if not 0.0 <= v <= 1.0}
        if bad or sum(fracs.values()) > 1.0 + 1e-9:
            raise ValueError(f"Faults: every fraction must be in [0, 1] and their sum <= 1, got {fracs}")
        if not 0.0 <= self.truncate_fraction < 1.0:
            raise ValueError(f"Faults.truncate_fraction must be in [0, 1), got {self.truncate_fraction}")
        object.__setattr__(self, "statuses_5xx", tuple(int(s) for s in self.statuses_5xx))

    @property
    def any(self) -> bool:
        """True when at least one fault fraction is above zero."""
        return any(getattr(self, k) > 0 for k in FAULT_KINDS)


FAULT_KINDS = ("error_5xx", "throttle_429", "reset_before", "reset_mid", "truncate", "slow",
               "repeat_page", "html_error")
"""Fault names in the order their fractions are laid out on [0, 1)."""


@dataclass(frozen=True)
class LinkShape:
    """A link between client and one host. ``latency_s``: added once per request before the response's
    first byte (seconds; 0.08 = 80 ms). ``conn_bytes_per_s``: token-bucket cap on each connection's
    response bytes (bytes/s; 25e6 = 25 MB/s); ``total_bytes_per_s``: one bucket shared by every connection
    of the host (bytes/s). ``burst_bytes``: bucket depth (bytes) for both. None = unlimited."""

    latency_s: float = 0.0
    conn_bytes_per_s: float | None = None
    total_bytes_per_s: float | None = None
    burst_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in ("conn_bytes_per_s", "total_bytes_per_s"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"LinkShape.{name} must be > 0 or None, got {v}")
        if self.latency_s < 0 or self.burst_bytes <= 0:
            raise ValueError(f"LinkShape: latency_s >= 0 and burst_bytes > 0 required, got {self}")

    @property
    def shaped(self) -> bool:
        """True when a bandwidth cap applies (responses then go through the token buckets)."""
        return self.conn_bytes_per_s is not None or self.total_bytes_per_s is not None


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator serves. ``roots`` maps a URL prefix (``lp-prod-protected``) to a folder;
    ``users`` maps Earthdata user names to passwords; ``tokens`` are valid bearer tokens; ``signed_ttl_s``
    is the pre-signed URL lifetime (X-Amz-Expires, whole seconds >= 1); ``redirect_status`` is the data
    host's answer to an authorised request (307 as FORMATS.md has it; TEA's source sends 303) and
    ``login_redirect_status`` its answer to ``/login`` (302; TEA's source sends 301); ``faults`` / ``link``
    map a host kind (login, data, signed) to its knobs; ``session_ttl_s`` is the data host's cookie life
    (seconds); ``head_presign_method`` is the method the URL answering a HEAD is signed for: "HEAD" as
    TEA's source does (a later GET on it gets 403), or "GET" (a HEAD on it gets 403; GDAL then retries
    with GET)."""

    roots: Mapping[str, str]
    users: Mapping[str, str] = field(default_factory=lambda: {"user": "password"})
    tokens: Sequence[str] = ("tok",)
    signed_ttl_s: int = 3600
    redirect_status: int = 307
    login_redirect_status: int = 302
    head_presign_method: str = "HEAD"
    session_ttl_s: int = 3600
    client_id: str = "emulator-tea-client"
    faults: Mapping[str, Faults] = field(default_factory=dict)
    link: Mapping[str, LinkShape] = field(default_factory=dict)
    addresses: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESSES))

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", {str(k).strip("/"): str(Path(v)) for k, v in self.roots.items()})
        object.__setattr__(self, "tokens", tuple(self.tokens))
        for name in ("faults", "link", "addresses"):
            unknown = set(getattr(self, name)) - set(HOST_KINDS)
            if unknown:
                raise ValueError(f"EmulatorConfig.{name}: unknown host kinds {sorted(unknown)}; "
                                 f"use {HOST_KINDS}")
        if self.redirect_status not in (302, 303, 307):
            raise ValueError(f"redirect_status must be 302, 303 or 307, got {self.redirect_status}")
        if self.login_redirect_status not in (301, 302, 303, 307):
            raise ValueError(f"login_redirect_status must be 301, 302, 303 or 307, got "
                             f"{self.login_redirect_status}")
        if self.head_presign_method not in ("HEAD", "GET"):
            raise ValueError(f"head_presign_method must be HEAD or GET, got {self.head_presign_method!r}")
        if int(self.signed_ttl_s) < 1 or int(self.signed_ttl_s) > 604800:
            raise ValueError(f"signed_ttl_s must be 1..604800 s (S3's limit), got {self.signed_ttl_s}")
        object.__setattr__(self, "signed_ttl_s", int(self.signed_ttl_s))
        if not self.roots:
            raise ValueError("EmulatorConfig.roots is empty: map at least one URL prefix to a folder")

    def faults_for(self, kind: str) -> Faults:
        """The fault knobs of host ``kind`` (none when not configured)."""
        return self.faults.get(kind, Faults())

    def link_for(self, kind: str) -> LinkShape:
        """The link shape of host ``kind`` (unshaped when not configured)."""
        return self.link.get(kind, LinkShape())

    def address_for(self, kind: str) -> str:
        """The loopback address host ``kind`` binds to."""
        return self.addresses.get(kind, DEFAULT_ADDRESSES[kind])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (``from_dict`` reads it back)."""
        d = dataclasses.asdict(self)
        d["roots"] = dict(self.roots)
        d["tokens"] = list(self.tokens)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmulatorConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a typo must not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"emulator config: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        kw = dict(d)
        kw["faults"] = {k: faults_from_dict(v) for k, v in d.get("faults", {}).items()}
        kw["link"] = {k: LinkShape(**v) for k, v in d.get("link", {}).items()}
        return cls(**kw)


def faults_from_dict(d: Mapping[str, Any] | Faults) -> Faults:
    """A ``Faults`` from its ``dataclasses.asdict`` form (lists become tuples)."""
    if isinstance(d, Faults):
        return d
    kw = dict(d)
    if "statuses_5xx" in kw:
        kw["statuses_5xx"] = tuple(kw["statuses_5xx"])
    return Faults(**kw)
