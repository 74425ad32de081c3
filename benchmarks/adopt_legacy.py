"""Benchmark: `idb-stats adopt` on an index shaped as the original collector left it.

    python benchmarks/adopt_legacy.py [--documents 50000] [--recordsets 1000]

Starts a throwaway PostgreSQL (adopt holds the run lock there) and osmem, writes a legacy `stats`
index (the original's mapping, `string` as keyword; documents POSTed in bulk without ids, counts
as doubles, about 4 of the 10 blocks active with short lists, 5% date-time harvest dates, 2%
without the media record blocks, 1% duplicated, plus one record-count document per day), then
runs `idb-stats adopt --duplicates keep-last` as a separate process and prints documents/s and
that process's peak RSS. Checks the result: one document per (recordset, day), the alias switched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from osmem_server import OsmemServer

from idb_stats import embedded
from idb_stats.legacy import original_mapping
from idb_stats.model import BLOCKS, RECORD_TYPES

FIRST_DAY = date(2016, 1, 1)

# Runs the CLI and prints the process's own peak RSS (kB) on standard error as it exits.
MEASURED_CLI = (
    "import resource, sys\n"
    "from idb_stats.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def legacy_document(rng: random.Random, recordset: int, day: date) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "recordset_id": f"{recordset:08x}-0000-4000-8000-000000000000",
        "harvest_date": day.isoformat() + ("T00:00:00" if rng.random() < 0.05 else ""),
    }
    for rt in RECORD_TYPES:
        doc[rt] = {}
    for rt, ty in BLOCKS:
        if rng.random() < 0.6:  # most recordsets see no activity of a kind on a given day
            doc[rt][ty] = {"count": 0.0, "total": 0.0, "items": [], "queries": [], "geocodes": []}
            continue
        hits = [rng.randint(1, 40) for _ in range(3)]
        doc[rt][ty] = {
            "count": float(len(hits) * 2),
            "total": float(sum(hits)),
            "items": [{"term": f"{rng.getrandbits(64):016x}", "count": float(h)} for h in hits],
            "queries": [
                {"term": rng.choice([None, f"q{rng.getrandbits(32):08x}"]), "count": float(sum(hits))}
            ],
            "geocodes": [
                {"geo": {"country": "US", "region": "FL"}, "count": float(hits[0] + hits[1])},
                {"geo": None, "count": float(hits[2])},
            ],
        }
    if rng.random() < 0.02:
        del doc["mediarecords"]
    return doc


def legacy_documents(count: int, recordsets: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    written = 0
    day = FIRST_DAY
    while written < count:
        for recordset in range(min(recordsets, count - written)):
            doc = legacy_document(rng, recordset, day)
            yield doc
            written += 1
            if rng.random() < 0.01 and written < count:  # the day was run twice for this recordset
                yield doc
                written += 1
        yield {
            "recordset_id": f"{0:08x}-0000-4000-8000-000000000000",
            "records_count": 1000,
            "mediarecords_count": 10,
            "harvest_date": f"{day}T06:00:00",
        }
        day += timedelta(days=1)


def request(url: str, method: str, path: str, body: bytes | None = None, ndjson: bool = False) -> Any:
    kind = "application/x-ndjson" if ndjson else "application/json"
    req = urllib.request.Request(url + path, data=body, method=method, headers={"content-type": kind})
    with urllib.request.urlopen(req, timeout=600) as response:
        return json.loads(response.read() or b"null")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=50_000)
    parser.add_argument("--recordsets", type=int, default=1000)
    args = parser.parse_args()
    server = embedded.start()
    osmem = OsmemServer.start()
    try:
        dsn = server.create_database("telemetry")
        url = osmem.url
        request(url, "PUT", "/stats", json.dumps({"mappings": original_mapping()}).encode())
        started = time.monotonic()
        total = 0
        lines: list[str] = []
        for doc in legacy_documents(args.documents, args.recordsets, seed=1):
            lines += ['{"index":{}}', json.dumps(doc)]
            total += 1
            if len(lines) >= 4000:
                request(url, "POST", "/stats/_bulk", ("\n".join(lines) + "\n").encode(), ndjson=True)
                lines = []
        if lines:
            request(url, "POST", "/stats/_bulk", ("\n".join(lines) + "\n").encode(), ndjson=True)
        request(url, "POST", "/stats/_refresh")
        print(f"legacy index: {total} documents written in {time.monotonic() - started:.1f} s")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_")},
            "IDB_STATS_SOURCE_DSN": dsn,
            "IDB_STATS_STORE": "opensearch",
            "IDB_STATS_STORE_URL": url,
        }
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", MEASURED_CLI, "-q", "adopt", "--duplicates", "keep-last"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if result.returncode != 0:
            sys.exit(f"adopt failed ({result.returncode}): {result.stderr[-2000:]}")
        report = json.loads(result.stdout)
        maxrss = next(
            int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("maxrss_kb")
        )
        print(
            f"adopt: {report['documents']} documents, {report['days']} days, {report['written']} written "
            f"({report['duplicate_recordset_days']} duplicates resolved, {report['size_snapshots']} size "
            f"snapshots) in {seconds:.1f} s = {report['documents'] / seconds:.0f} documents/s, "
            f"peak RSS {maxrss / 1024:.1f} MB"
        )
        aliases = request(url, "GET", "/_alias/stats")
        usage = json.dumps({"query": {"term": {"type": "search"}}}).encode()
        held = request(url, "POST", "/stats/_count", usage)["count"]
        assert sorted(aliases) == ["stats-api", "stats-v2"], aliases
        assert held == report["written"], (held, report["written"])
        print(
            f"check: 'stats' is an alias of stats-v2 and stats-api; {held} daily documents, one per "
            "recordset and day"
        )
    finally:
        osmem.process.terminate()
        server.stop()


if __name__ == "__main__":
    main()
