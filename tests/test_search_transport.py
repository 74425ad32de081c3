"""A search store takes its transport from the caller: here a wrapper around the OpenSearch client
that counts every request and refuses the first bulk with a 503, against the real osmem server."""

from __future__ import annotations

import os
from collections import Counter
from datetime import date
from typing import Any

from idb_stats.config import load_config
from idb_stats.documents import build_document
from idb_stats.model import Cell, DayStats
from idb_stats.stores.opensearch import OpenSearchStore, OpenSearchTransport, build_client
from idb_stats.stores.transport import HTTPFailure, SearchTransport

DAY = date(2024, 3, 5)


class CountingTransport:
    """Counts requests by method and first path segment; answers the first bulk with a 503."""

    def __init__(self, inner: SearchTransport):
        self.inner = inner
        self.requests: Counter[tuple[str, str]] = Counter()
        self.closed = False

    def send(self, method: str, path: str, params: dict[str, Any] | None, body: Any, ndjson: bool) -> Any:
        self.requests[method, path.split("/")[1]] += 1
        if path == "/_bulk" and self.requests[method, "_bulk"] == 1:
            raise HTTPFailure(503, "refused once by the test's transport")
        return self.inner.send(method, path, params, body, ndjson)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_a_store_publishes_and_exports_through_a_transport_handed_in(osmem_url: str) -> None:
    prefix = f"t{os.getpid()}-handed-in-transport"
    config = load_config(
        overrides={
            "source.dsn": "postgresql://127.0.0.1/unused",
            "store.kind": "opensearch",
            "store.url": osmem_url,
            "store.daily_index": f"{prefix}-stats",
            "store.totals_index": f"{prefix}-totals",
            "store.runs_index": f"{prefix}-runs",
            "store.api_index": f"{prefix}-api",
            "store.publishers_index": f"{prefix}-publishers",
            "store.bulk_max_retries": 2,
        },
        environ={},
    )
    transport = CountingTransport(OpenSearchTransport(build_client(config)))
    store = OpenSearchStore(config, transport)
    cells = [
        Cell("rs-1", "records", "search", "geo", '{"country": "US"}', 2, 5),
        Cell("rs-1", "records", "search", "item", "record-1", 0, 5),
    ]
    document, _ = build_document("rs-1", DAY, cells)
    with store:
        store.init()
        store.publish_day(DayStats(DAY, run_id="handed-in"), iter([document]))
        exported = list(store.export(DAY, DAY))
        totals = list(store.totals(["rs-1"]))
        days = store.completed_days()

    assert exported == [document]
    assert [t["records"]["search"]["total"] for t in totals] == [5]
    assert list(days) == [DAY]
    # Everything went through the transport handed in: the refused bulk was retried above it.
    assert transport.requests["POST", "_bulk"] >= 2
    assert transport.requests["PUT", f"{prefix}-runs"] >= 1  # the day's marker
    assert sum(transport.requests.values()) > 10
    assert transport.closed
