"""Benchmark: aggregate one day of synthetic telemetry three ways, on the same data.

    python benchmarks/collect_day.py [--rows-per-day 200000] [--days 6] [--seed 1] [--scale]

Starts a throwaway PostgreSQL, loads `--days` days of seeded synthetic telemetry and measures,
each in its own process so that peak RSS belongs to that step alone:

1. floor     one SQL pass expanding every payload entry of the day (count only);
2. baseline  the rules applied row at a time in Python over a server-side cursor (idb_stats.rules),
             one document per recordset, nothing written: what the original collector did;
3. collect   `idb-stats collect-stats --date D` end to end into the PostgreSQL store.

Then checks that the store holds exactly the baseline's documents, runs collect-stats over all
days with --jobs 1 and --jobs 2, and with --scale runs step 3 on a day with twice the rows.
Prints wall seconds, payload entries per second, peak RSS and the ratios the targets refer to.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from idb_stats import embedded, rules, synthetic
from idb_stats.model import event_window

FIRST_EVENT_DAY = date(2026, 1, 1)
FLOOR_SQL = "SELECT count(*) FROM stats, jsonb_each(payload) WHERE date >= %s AND date < %s"
BASELINE_SQL = """
SELECT s.id, s.type, s.record_type, q.query_hash, s.ip_geocode, s.payload
FROM stats s LEFT JOIN queries q ON q.id = s.query_id
WHERE s.date >= %s AND s.date < %s"""


@dataclass
class Measure:
    name: str
    seconds: float
    peak_rss_mb: float
    entries: int

    def line(self) -> str:
        rate = self.entries / self.seconds if self.seconds else 0.0
        return (
            f"{self.name:<34}{self.seconds:>9.2f} s{rate / 1e6:>10.2f} M entries/s"
            f"{self.peak_rss_mb:>10.1f} MB peak RSS"
        )


# Runs a script or module and, as it exits, writes its peak RSS (VmHWM). The kernel's ru_maxrss
# would not do: it keeps the high-water mark of the forking parent across exec.
PEAK_WRAPPER = """
import atexit, os, runpy, sys
def write_peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(peak)
atexit.register(write_peak)
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a script or module (args[0]) to its end: wall seconds, its own peak RSS in MB, stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.NamedTemporaryFile("r") as peak:
        started = time.monotonic()
        process = subprocess.run(
            [sys.executable, "-c", PEAK_WRAPPER, *args],
            stdout=out,
            env={**os.environ, **(env or {}), "BENCH_PEAK_FILE": peak.name},
            check=False,
        )
        seconds = time.monotonic() - started
        out.seek(0)
        text = out.read()
        peak_kb = int(peak.read() or 0)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} ... failed with exit code {process.returncode}:\n{text}")
    return seconds, peak_kb / 1024, text


# Steps 1 and 2 run in a child process of this script (see main's --step).
def step_floor(dsn: str, harvest: date) -> dict[str, Any]:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(FLOOR_SQL, event_window(harvest))
        (entries,) = cur.fetchone() or (0,)
    conn.close()
    return {"entries": entries}


def _baseline_rows(dsn: str, harvest: date) -> Iterator[rules.TelemetryRow]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor(name="baseline") as cur:
            cur.itersize = 2000
            cur.execute(BASELINE_SQL, event_window(harvest))
            for row in cur:
                yield rules.TelemetryRow(*row)
    finally:
        conn.close()


def step_baseline(dsn: str, harvest: date, out: Path) -> dict[str, Any]:
    docs, report = rules.aggregate(_baseline_rows(dsn, harvest), harvest)
    with out.open("w") as handle:
        for doc in docs:
            handle.write(json.dumps(doc, sort_keys=True) + "\n")
    return {"documents": len(docs), "rows": report.rows}


def _load_day(dsn: str, spec: synthetic.Spec, day: date, query_ids: dict[str, int]) -> int:
    conn = psycopg2.connect(dsn)
    try:
        return synthetic.load_day(conn, spec, day, query_ids)
    finally:
        conn.close()


def load(dsn: str, days: list[tuple[date, int]], seed: int) -> int:
    """Create the telemetry tables and fill the given (calendar day, rows) on both cores."""
    conn = psycopg2.connect(dsn)
    spec = synthetic.Spec(first_day=FIRST_EVENT_DAY, seed=seed)
    synthetic.create_schema(conn)
    query_ids = synthetic.load_queries(conn, spec)
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(
                _load_day, dsn, synthetic.Spec(first_day=day, rows_per_day=rows, seed=seed), day, query_ids
            )
            for day, rows in days
        ]
        written = sum(f.result() for f in futures)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE stats")
    conn.close()
    return written


def cli_command(*args: str) -> list[str]:
    return ["idb_stats.cli", *args]


def collect(source_dsn: str, store_dsn: str, *args: str) -> tuple[float, float]:
    env = {
        "IDB_STATS_SOURCE_DSN": source_dsn,
        "IDB_STATS_STORE": "postgres",
        "IDB_STATS_STORE_URL": store_dsn,
    }
    seconds, rss, _ = run_measured(cli_command("-q", "collect-stats", *args), env)
    return seconds, rss


def same_documents(baseline: Path, store_dsn: str, harvest: date) -> tuple[bool, int]:
    env = {"IDB_STATS_SOURCE_DSN": store_dsn, "IDB_STATS_STORE": "postgres", "IDB_STATS_STORE_URL": store_dsn}
    _, _, exported = run_measured(
        cli_command("-q", "export", "--from", str(harvest), "--to", str(harvest)), env
    )

    def by_recordset(lines: Iterator[str]) -> dict[str, str]:
        docs = (json.loads(line) for line in lines if line.strip())
        return {doc["recordset_id"]: json.dumps(doc, sort_keys=True) for doc in docs}

    with baseline.open() as handle:
        expected = by_recordset(handle)
    actual = by_recordset(iter(exported.splitlines()))
    return expected == actual, len(expected)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=200_000)
    parser.add_argument(
        "--days", type=int, default=6, help="days loaded; --jobs is compared over all of them"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", action="store_true", help="also run collect-stats on a day of 2x the rows")
    parser.add_argument("--step", choices=["floor", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--harvest-date", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "floor":
        print(json.dumps(step_floor(args.dsn, args.harvest_date)))
        return
    if args.step == "baseline":
        print(json.dumps(step_baseline(args.dsn, args.harvest_date, args.out)))
        return

    days = [(FIRST_EVENT_DAY + timedelta(days=i), args.rows_per_day) for i in range(args.days)]
    scale_day = FIRST_EVENT_DAY + timedelta(days=args.days)
    if args.scale:
        days.append((scale_day, 2 * args.rows_per_day))
    harvest = FIRST_EVENT_DAY + timedelta(days=1)
    work = Path(tempfile.mkdtemp(prefix="idb-stats-bench-"))
    print(f"idb-stats benchmark {date.today()}: {args.rows_per_day} rows/day, {args.days} days")
    print(f"seed {args.seed}; machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    server = embedded.start()
    try:
        source = server.create_database("telemetry")
        started = time.monotonic()
        written = load(source, days, args.seed)
        print(f"loaded {written} rows in {time.monotonic() - started:.0f} s\n")
        me = [__file__, "--dsn", source, "--harvest-date", str(harvest)]

        seconds, rss, out = run_measured([*me, "--step", "floor"])
        entries = json.loads(out)["entries"]
        floor = Measure("1 floor (SQL pass over entries)", seconds, rss, entries)
        print(floor.line())
        baseline_out = work / "baseline.ndjson"
        seconds, rss, out = run_measured([*me, "--step", "baseline", "--out", str(baseline_out)])
        baseline = Measure("2 row-at-a-time baseline", seconds, rss, entries)
        print(baseline.line())
        store = server.create_database("store_day")
        seconds, rss = collect(source, store, "--date", str(harvest))
        full = Measure("3 collect-stats end to end", seconds, rss, entries)
        print(full.line())
        equal, documents = same_documents(baseline_out, store, harvest)
        print(f"\ndocuments equal to the baseline's: {equal} ({documents} documents, harvest date {harvest})")
        print(f"ratio 3/1 (collect / floor):    {full.seconds / floor.seconds:.2f}  (target <= 3)")
        print(f"ratio 2/3 (baseline / collect): {baseline.seconds / full.seconds:.2f}  (target >= 6)")

        first, last = harvest, FIRST_EVENT_DAY + timedelta(days=args.days)
        one, _ = collect(
            source, server.create_database("store_jobs1"), "--from", str(first), "--to", str(last)
        )
        two, _ = collect(
            source,
            server.create_database("store_jobs2"),
            "--from",
            str(first),
            "--to",
            str(last),
            "--jobs",
            "2",
        )
        print(f"\ncollect-stats over {args.days} days: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s")
        print(f"ratio jobs 1 / jobs 2: {one / two:.2f}  (target >= 1.6)")

        if args.scale:
            seconds, rss = collect(source, store, "--date", str(scale_day + timedelta(days=1)))
            rows = 2 * args.rows_per_day
            print(f"\n--scale: collect-stats on {rows} rows: {seconds:.2f} s, {rss:.1f} MB peak RSS")
            print(f"peak RSS 2x rows / 1x rows: {rss / full.peak_rss_mb:.2f}  (target <= 1.25)")
        if not equal:
            raise SystemExit("the store's documents differ from the baseline's")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
