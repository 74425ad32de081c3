"""The HTTP side of the search stores: one request through an engine's client, retried.

An engine module (elasticsearch.py, opensearch.py) wraps its official client as a SearchTransport:
one request, its errors translated to HTTPFailure or Unreachable. RetryingRequests adds what every
engine shares: bounded retries with backoff, bulk requests in chunks with refused items retried,
and errors turned into StoreError naming the store.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from ..config import Config
from ..errors import StoreError, StoreUnreachable
from ..json_text import compact

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 502, 503, 504}

# One bulk action: its metadata line and its source (None for a delete).
BulkAction = tuple[dict[str, Any], dict[str, Any] | None]


class HTTPFailure(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class Unreachable(Exception):
    pass


class SearchTransport(Protocol):
    def send(self, method: str, path: str, params: dict[str, Any] | None, body: Any, ndjson: bool) -> Any:
        """One request: the decoded body (for HEAD, whether the status is 2xx); raises HTTPFailure
        for an HTTP error status, Unreachable for no answer."""
        ...

    def close(self) -> None: ...


def client_options(config: Config, timeout_option: str) -> dict[str, Any]:
    """What both official clients are given: one attempt per call (RetryingRequests retries,
    with backoff, what is worth retrying) and the TLS settings. Authentication differs by client."""
    options: dict[str, Any] = {
        timeout_option: config.request_timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": config.verify_certs,
    }
    if config.ca_bundle:
        options["ca_certs"] = config.ca_bundle
    return options


def error_detail(body: Any) -> str:
    """An error response in one line: its type and the root cause's reason, which says what to fix."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return str(body)[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return str(body)[:500]
    causes = error.get("root_cause") or []
    cause = causes[0] if causes and isinstance(causes[0], dict) else error
    parts = [str(error.get("type", "error"))]
    for reason in (cause.get("reason"), error.get("reason")):
        if reason and reason not in parts:
            parts.append(str(reason))
    return ": ".join(parts)[:1000]


def check_bulk(results: list[dict[str, Any]], allowed: Sequence[int] = ()) -> None:
    """Raise StoreError unless every item was acknowledged (or failed with an allowed status)."""
    failed = [r for r in results if r.get("status", 500) >= 300 and r.get("status") not in allowed]
    if failed:
        example = failed[0]
        raise StoreError(
            f"{len(failed)} bulk items not acknowledged, e.g. {example.get('_id')}: "
            f"{example.get('status')} {example.get('error')}"
        )


class RetryingRequests:
    """Requests through a transport with bounded retries; `kind` names the store in errors."""

    def __init__(self, transport: SearchTransport, kind: str, max_retries: int, chunk_bytes: int):
        self.transport = transport
        self.kind = kind
        self.max_retries = max_retries
        self.chunk_bytes = chunk_bytes
        self.sleep: Callable[[float], None] = time.sleep

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        ndjson: bool = False,
        ok: Sequence[int] = (),
    ) -> Any:
        for attempt in range(self.max_retries + 1):
            try:
                return self.transport.send(method, path, params, body, ndjson)
            except HTTPFailure as exc:
                if exc.status in ok:
                    return None
                if exc.status not in RETRY_STATUSES or attempt == self.max_retries:
                    raise StoreError(f"{self.kind} {method} {path}: {exc}") from None
                log.warning("%s %s %s: %s, retrying", self.kind, method, path, exc)
            except Unreachable as exc:
                if attempt == self.max_retries:
                    raise StoreUnreachable(f"{self.kind} store unreachable: {exc}") from None
                log.warning("%s %s %s: %s, retrying", self.kind, method, path, exc)
            self.backoff(attempt)
        raise AssertionError("unreachable")

    def backoff(self, attempt: int) -> None:
        # Exponential with jitter, capped: 0.1 s, 0.2 s, 0.4 s ... 10 s.
        self.sleep(min(10.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2))

    def bulk(self, actions: Iterable[BulkAction]) -> list[dict[str, Any]]:
        """Send actions in chunks; retry items refused with a retryable status. Returns every item result.
        Each action is written as its NDJSON lines once: they measure the chunk and are what is sent,
        again on a retry."""
        results: list[dict[str, Any]] = []
        chunk: list[str] = []
        size = 0
        for meta, source in actions:
            lines = json.dumps(meta) + "\n" + (compact(source) + "\n" if source is not None else "")
            chunk.append(lines)
            size += len(lines.encode())
            if size >= self.chunk_bytes:
                results.extend(self._bulk_chunk(chunk))
                chunk, size = [], 0
        if chunk:
            results.extend(self._bulk_chunk(chunk))
        return results

    def _bulk_chunk(self, chunk: list[str]) -> list[dict[str, Any]]:
        final: dict[int, dict[str, Any]] = {}
        todo = list(range(len(chunk)))
        for attempt in range(self.max_retries + 1):
            body = "".join(chunk[i] for i in todo)
            response = self.request("POST", "/_bulk", body, ndjson=True)
            retry = []
            for i, item in zip(todo, response["items"], strict=True):
                result = next(iter(item.values()))
                if result.get("status") in RETRY_STATUSES:
                    retry.append(i)
                else:
                    final[i] = result
            if not retry:
                break
            if attempt == self.max_retries:
                raise StoreError(
                    f"{self.kind}: {len(retry)} bulk items still refused after {attempt + 1} attempts"
                )
            todo = retry
            self.backoff(attempt)
        return [final[i] for i in range(len(chunk))]

    def index_state(self, name: str) -> tuple[str, list[str]]:
        """("alias", [indexes]), ("index", []) or ("absent", []): what a name is on the cluster.
        Elasticsearch 2 answers 200 {} where later versions answer 404 for a name that is no alias."""
        aliases = self.request("GET", f"/_alias/{quote(name)}", ok=(404,))
        if aliases and all(name in v.get("aliases", {}) for v in aliases.values()):
            return "alias", sorted(aliases)
        if self.request("HEAD", f"/{quote(name)}", ok=(404,)):
            return "index", []
        return "absent", []

    def close(self) -> None:
        self.transport.close()
