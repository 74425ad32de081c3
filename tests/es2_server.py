"""A stand-in for the portal's live cluster, Elasticsearch 2.4, for exactly the requests adopt sends.

No Elasticsearch 2 can run here (it needs a Java 8 runtime and is long out of support), so adopt's
reads are tested against this HTTP server on a real socket. It answers in the 2.x wire format as
the 2.x reference documents it, and only what adopt's legacy reader asks:
  GET /                      version 2.4.6, no `distribution`
  GET /_alias/{name}         200 {} for a name that is no alias (later versions answer 404)
  HEAD /{name}               index or alias
  POST /{index}/_refresh, GET /{index}/_count
  POST /{index}/_search      a `date_histogram` with `interval` (2.x has no `calendar_interval`),
                             or a `range` on harvest_date, `sort: ["_doc"]`, `?scroll=`
  POST /_search/scroll, DELETE /_search/scroll
Hits carry `_type` and `hits.total` is a number. Body keys 2.x does not know
(`seq_no_primary_term`, `calendar_interval`, `search_after`, ...) are refused with 400, as 2.x's
parser refuses them, so a reader that sends the current dialect fails here as it would there.
Documents without an id get the 2.x time-based id (six bytes of milliseconds, six of node, three
of sequence, URL-safe base64), in the order they are added.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

NODE = bytes.fromhex("0a1b2c3d4e5f")
SEARCH_KEYS = {"query", "sort", "size", "aggs", "_source", "from"}
HISTOGRAM_KEYS = {"field", "interval", "min_doc_count", "format"}


def moment(value: Any) -> int:
    """harvest_date as 2.x's default `date` parser reads it: milliseconds since the epoch (UTC)."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value)
    if len(text) == 10:
        parsed = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    else:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def error(kind: str, reason: str, status: int) -> tuple[int, dict[str, Any]]:
    cause = {"type": kind, "reason": reason}
    return status, {"error": {"root_cause": [cause], **cause}, "status": status}


@dataclass
class Doc:
    id: str
    type: str
    source: dict[str, Any]


@dataclass
class Es2:
    """The cluster's state: indexes of typed documents, aliases, open scrolls."""

    indexes: dict[str, list[Doc]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> index
    scrolls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    clock = itertools.count(1_470_000_000_000, 7)
    sequence = itertools.count(1)

    def add(self, index: str, doc_type: str, source: dict[str, Any], doc_id: str | None = None) -> str:
        if doc_id is None:
            raw = next(self.clock).to_bytes(6, "big") + NODE + next(self.sequence).to_bytes(3, "big")
            doc_id = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        self.indexes.setdefault(index, []).append(Doc(doc_id, doc_type, source))
        return doc_id

    def resolve(self, name: str) -> str | None:
        name = self.aliases.get(name, name)
        return name if name in self.indexes else None

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if method == "GET" and not parts:
            version = {"number": "2.4.6", "build_snapshot": False, "lucene_version": "5.5.2"}
            return 200, {
                "name": "esnode",
                "cluster_name": "idigbio",
                "version": version,
                "tagline": "You Know, for Search",
            }
        if method == "GET" and parts[0] == "_alias" and len(parts) == 2:
            index = self.aliases.get(parts[1])
            return 200, ({index: {"aliases": {parts[1]: {}}}} if index else {})
        if parts[0] == "_search" and parts[1:] == ["scroll"]:
            return self._scroll(method, body)
        index = self.resolve(parts[0])
        if method == "HEAD" and len(parts) == 1:
            return (200 if index else 404), None
        if index is None:
            return error("index_not_found_exception", "no such index", 404)
        docs = self.indexes[index]
        shards = {"total": 5, "successful": 5, "failed": 0}
        if parts[1:] == ["_refresh"] and method == "POST":
            return 200, {"_shards": shards}
        if parts[1:] == ["_count"] and method == "GET":
            return 200, {"count": len(docs), "_shards": shards}
        if parts[1:] == ["_search"] and method == "POST":
            return self._search(index, docs, query, body or {})
        return error("illegal_argument_exception", f"no handler for {method} {path}", 400)

    def _search(
        self, index: str, docs: list[Doc], query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        unknown = sorted(set(body) - SEARCH_KEYS)
        if unknown:
            return error(
                "search_parse_exception", f"failed to parse search source. unknown key [{unknown[0]}]", 400
            )
        matching = [d for d in docs if _matches(d, body.get("query"))]
        shards = {"total": 5, "successful": 5, "failed": 0}
        if "aggs" in body:
            histogram = body["aggs"]["days"]["date_histogram"]
            if set(histogram) - HISTOGRAM_KEYS or histogram.get("interval") != "day":
                return error(
                    "search_parse_exception", f"Unknown key for a VALUE_STRING in [days]: {histogram}", 400
                )
            counts: dict[int, int] = {}
            for d in matching:
                day = moment(d.source["harvest_date"]) // 86_400_000 * 86_400_000
                counts[day] = counts.get(day, 0) + 1
            buckets = [
                {
                    "key_as_string": datetime.fromtimestamp(k / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "key": k,
                    "doc_count": n,
                }
                for k, n in sorted(counts.items())
            ]
            hits = {"total": len(matching), "max_score": 0.0, "hits": []}
            return 200, {
                "took": 1,
                "timed_out": False,
                "_shards": shards,
                "hits": hits,
                "aggregations": {"days": {"buckets": buckets}},
            }
        if body.get("sort") != ["_doc"]:
            return error("search_parse_exception", "adopt's reader sorts by _doc", 400)
        all_hits = [
            {"_index": index, "_type": d.type, "_id": d.id, "_score": None, "_source": d.source, "sort": [0]}
            for d in matching
        ]
        size = int(body.get("size", 10))
        page, rest = all_hits[:size], all_hits[size:]
        response: dict[str, Any] = {"took": 1, "timed_out": False, "_shards": shards}
        if "scroll" in query:
            scroll_id = base64.b64encode(f"scan;{len(self.scrolls)};{index}".encode()).decode()
            self.scrolls[scroll_id] = rest
            response["_scroll_id"] = scroll_id
            self.scroll_size = size
        response["hits"] = {"total": len(matching), "max_score": None, "hits": page}
        return 200, response

    def _scroll(self, method: str, body: Any) -> tuple[int, Any]:
        if method == "DELETE":
            ids = body.get("scroll_id", []) if isinstance(body, dict) else []
            freed = sum(1 for i in ids if self.scrolls.pop(i, None) is not None)
            return 200, {"succeeded": True, "num_freed": freed}
        scroll_id = body.get("scroll_id") if isinstance(body, dict) else None
        if scroll_id not in self.scrolls:
            return error(
                "search_context_missing_exception", f"No search context found for id [{scroll_id}]", 404
            )
        rest = self.scrolls[scroll_id]
        page, self.scrolls[scroll_id] = rest[: self.scroll_size], rest[self.scroll_size :]
        shards = {"total": 5, "successful": 5, "failed": 0}
        hits = {"total": -1, "max_score": None, "hits": page}
        return 200, {"_scroll_id": scroll_id, "took": 1, "timed_out": False, "_shards": shards, "hits": hits}

    scroll_size: int = 10


def _matches(doc: Doc, query: Any) -> bool:
    if query is None or "match_all" in query:
        return True
    bounds = query["range"]["harvest_date"]
    at = moment(doc.source.get("harvest_date"))
    return moment(bounds["gte"]) <= at < moment(bounds["lt"])


class Es2Server:
    """Es2 on a free local port, on a thread; `url` to reach it."""

    def __init__(self) -> None:
        self.cluster = Es2()
        cluster = self.cluster

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, payload = cluster.handle(
                    self.command, url.path, query, json.loads(raw) if raw else None
                )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
