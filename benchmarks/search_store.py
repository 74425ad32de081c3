"""Benchmark: documents per second written to OpenSearch (osmem), with items/queries stored or indexed.

    python benchmarks/search_store.py [--rows-per-day 20000] [--days 5]

Collects a few days of synthetic telemetry into a throwaway PostgreSQL store, exports the daily
documents, then imports them (`idb-stats import`'s code path: the three-phase publish with bulk
writes and totals merging) into an in-memory OpenSearch-compatible server twice: with the shipped
mapping (the `items` and `queries` lists kept in `_source` only) and with those lists indexed as
nested keyword/long fields. Prints documents/s, terms/s and what the server reports of index size.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

from collect_day import FIRST_EVENT_DAY, load
from osmem_server import OsmemServer

from idb_stats import embedded
from idb_stats.collect import Selection, collect
from idb_stats.config import load_config
from idb_stats.importing import import_documents
from idb_stats.model import BLOCKS
from idb_stats.stores import mappings, open_store


def indexed_block_mapping(stored: Any) -> Any:
    """The shipped block mapping with items and queries indexed (nested term/count pairs)."""

    def mapping() -> dict[str, Any]:
        block = stored()
        terms = {"type": "nested", "properties": {"term": {"type": "keyword"}, "count": {"type": "long"}}}
        block["properties"]["items"] = terms
        block["properties"]["queries"] = terms
        return block

    return mapping


def terms_in(docs: list[dict[str, Any]]) -> int:
    return sum(len(d[rt][ty][k]) for d in docs for rt, ty in BLOCKS for k in ("items", "queries", "geocodes"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()
    first, last = FIRST_EVENT_DAY + timedelta(days=1), FIRST_EVENT_DAY + timedelta(days=args.days)
    server = embedded.start()
    osmem = OsmemServer.start()
    try:
        dsn = server.create_database("telemetry")
        load(
            dsn, [(FIRST_EVENT_DAY + timedelta(days=i), args.rows_per_day) for i in range(args.days)], seed=1
        )
        source_config = load_config(overrides={"source.dsn": dsn}, environ={})
        collect(source_config, Selection(first=first, last=last), jobs=2)
        store = open_store(source_config)
        docs = list(store.export(first, last))
        store.close()
        size = sum(len(str(d)) for d in docs)
        print(
            f"{len(docs)} daily documents over {args.days} days ({args.rows_per_day} rows/day), "
            f"{terms_in(docs)} breakdown terms, about {size / 1e6:.0f} MB of JSON"
        )
        shipped = mappings._block_mapping
        url = osmem.url
        for variant in ("stored", "indexed"):
            mappings._block_mapping = shipped if variant == "stored" else indexed_block_mapping(shipped)
            prefix = f"bench-{variant}"
            config = load_config(
                overrides={
                    "source.dsn": dsn,
                    "store.kind": "opensearch",
                    "store.url": url,
                    "store.daily_index": f"{prefix}-stats",
                    "store.totals_index": f"{prefix}-totals",
                    "store.runs_index": f"{prefix}-runs",
                    "store.api_index": f"{prefix}-api",
                },
                environ={},
            )
            started = time.monotonic()
            import_documents(config, iter(docs))
            seconds = time.monotonic() - started
            stats = osmem.request("GET", f"/{prefix}-stats/_stats/store")
            print(
                f"items/queries {variant:<8} {seconds:6.1f} s  {len(docs) / seconds:7.0f} documents/s  "
                f"{terms_in(docs) / seconds / 1e3:6.0f}k terms/s  index store: {_store_size(stats)}"
            )
        mappings._block_mapping = shipped
    finally:
        osmem.close()
        server.stop()


def _store_size(stats: Any) -> str:
    try:
        return f"{stats['_all']['primaries']['store']['size_in_bytes'] / 1e6:.1f} MB"
    except (KeyError, TypeError):
        return "not reported by this server"


if __name__ == "__main__":
    main()
