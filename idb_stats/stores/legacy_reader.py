"""Reading the original collector's index on any cluster it may live on, over plain HTTP.

The portal's live cluster is Elasticsearch 2.4, which no current client speaks to; adopt reads it
(and Elasticsearch 5-9, OpenSearch) with the Python standard library and only requests whose wire
format every one of them shares: `GET /`, `HEAD /{index}`, `GET /_alias/{name}`,
`GET /{index}/_count`, `POST /{index}/_refresh`, one date histogram, and a scroll
(`POST /{index}/_search?scroll=`, `POST /_search/scroll`, `DELETE /_search/scroll`).
What differs by version is chosen from `GET /`:
  - the histogram's `interval` (before 7.2) or `calendar_interval`;
  - `seq_no_primary_term` (6.x+) for "last written"; before it, ids the server generated are
    time-based (their first six bytes are the millisecond, Elasticsearch 2.x) and give the order;
  - `_type` on each hit (before 8): the original's `search` type holds daily documents, `api` its
    record-count snapshots, anything else (`digest`, written by ingestion) is not adopted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from ..config import Config
from ..errors import StoreError
from .transport import HTTPFailure, RetryingRequests, Unreachable, error_detail

PAGE = 1000
# Mapping types of Elasticsearch before 7 that carry no meaning of their own.
GENERIC_TYPES = {"_doc", "doc", "_default_", None}


class PlainHTTPTransport:
    """One request with urllib: the configuration's credentials and TLS settings, no client library."""

    def __init__(self, config: Config):
        self.base = (config.store_url or "").rstrip("/")
        self.timeout = config.request_timeout
        self.headers = {"accept": "application/json"}
        if config.store_api_key:
            self.headers["authorization"] = f"ApiKey {config.store_api_key}"
        elif config.store_username:
            pair = f"{config.store_username}:{config.store_password or ''}".encode()
            self.headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
        self.context: ssl.SSLContext | None = None
        if self.base.startswith("https://"):
            self.context = ssl.create_default_context(cafile=config.ca_bundle or None)
            if not config.verify_certs:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def send(self, method: str, path: str, params: dict[str, Any] | None, body: Any, ndjson: bool) -> Any:
        url = self.base + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise HTTPFailure(exc.code, error_detail(exc.read() or exc.reason)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(str(getattr(exc, "reason", exc))) from None
        if method == "HEAD":
            return True
        return json.loads(payload) if payload else None

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class LegacyHit:
    order: tuple[int, int, str]  # "last written" order within a day
    mapping_type: str | None  # the hit's _type (None on Elasticsearch 8+ and OpenSearch)
    source: dict[str, Any]


def _generated_id_order(doc_id: str) -> tuple[int, int]:
    """(millisecond, sequence) of an id Elasticsearch 2.x generated: 15 bytes, URL-safe base64,
    the first six the time and the last three a sequence number; (0, 0) for any other id."""
    if len(doc_id) != 20:
        return (0, 0)
    try:
        raw = base64.urlsafe_b64decode(doc_id + "=" * (-len(doc_id) % 4))
    except (binascii.Error, ValueError):
        return (0, 0)
    return (int.from_bytes(raw[:6], "big"), int.from_bytes(raw[12:15], "big")) if len(raw) == 15 else (0, 0)


class LegacyReader:
    """The original's index, read-only, on a cluster of any version since Elasticsearch 2."""

    def __init__(self, config: Config, transport: Any = None):
        self.http = RetryingRequests(
            transport or PlainHTTPTransport(config), "legacy cluster", config.bulk_max_retries, 1 << 20
        )
        about = self.http.request("GET", "/") or {}
        version = about.get("version", {}) if isinstance(about, dict) else {}
        self.version = str(version.get("number", "0"))
        self.opensearch = version.get("distribution") == "opensearch"
        major_minor = tuple(int(p) for p in [*self.version.split("."), "0", "0"][:2] if p.isdigit())
        self.modern = self.opensearch or major_minor >= (7, 2)  # calendar_interval, seq_no order
        self.has_seq_no = self.opensearch or major_minor >= (6, 0)

    def index_state(self, name: str) -> tuple[str, list[str]]:
        """("alias", [indexes]), ("index", []) or ("absent", []): see RetryingRequests.index_state."""
        return self.http.index_state(name)

    def count(self, index: str) -> int:
        self.http.request("POST", f"/{quote(index)}/_refresh")
        return int(self.http.request("GET", f"/{quote(index)}/_count")["count"])

    def days(self, index: str) -> dict[date, int]:
        """Documents per UTC day of harvest_date, whatever its stored form (date, date-time)."""
        interval = "calendar_interval" if self.modern else "interval"
        histogram = {"field": "harvest_date", interval: "day", "min_doc_count": 1}
        body = {"size": 0, "aggs": {"days": {"date_histogram": histogram}}}
        buckets = self.http.request("POST", f"/{quote(index)}/_search", body)["aggregations"]["days"][
            "buckets"
        ]
        return {datetime.fromtimestamp(b["key"] / 1000, UTC).date(): int(b["doc_count"]) for b in buckets}

    def documents(self, index: str, day: date) -> Iterator[LegacyHit]:
        """Every document of a UTC day, whatever its id or type. A scroll: search_after would need a
        unique sort key, and two documents of one recordset and day must both be read."""
        body: dict[str, Any] = {
            "query": {
                "range": {"harvest_date": {"gte": day.isoformat(), "lt": (day + timedelta(1)).isoformat()}}
            },
            "sort": ["_doc"],
            "size": PAGE,
        }
        if self.has_seq_no:
            body["seq_no_primary_term"] = True
        response = self.http.request("POST", f"/{quote(index)}/_search", body, params={"scroll": "5m"})
        scroll_id = response.get("_scroll_id")
        try:
            while True:
                hits = response["hits"]["hits"]
                for hit in hits:
                    if not isinstance(hit.get("_source"), dict):
                        raise StoreError(
                            f"legacy cluster: a hit of {index!r} without _source ({hit.get('_id')})"
                        )
                    doc_id = str(hit.get("_id", ""))
                    order = (
                        (int(hit.get("_seq_no", 0)), 0, doc_id)
                        if self.has_seq_no
                        else (
                            *_generated_id_order(doc_id),
                            doc_id,
                        )
                    )
                    yield LegacyHit(order, hit.get("_type"), hit["_source"])
                if not hits or not scroll_id:
                    return
                response = self.http.request(
                    "POST", "/_search/scroll", {"scroll": "5m", "scroll_id": scroll_id}
                )
                scroll_id = response.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                with contextlib.suppress(StoreError):
                    self.http.request("DELETE", "/_search/scroll", {"scroll_id": [scroll_id]}, ok=(404,))

    def close(self) -> None:
        self.http.close()
