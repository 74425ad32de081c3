"""Benchmark: `idb-stats monthly-report` for the last month of a synthetic year, and the report
and `show --publisher` with names, for 1,600 recordsets in 200 publishers.

    python benchmarks/monthly_report.py [--rows-per-day 2000] [--days 365] [--publishers 200]

Loads the telemetry as report_year.py does, collects it into the PostgreSQL store, creates the
ingest database's recordsets and publishers tables (every synthetic recordset in one of the
publishers, in turn), then times monthly-report for the year's last month (its files, their size,
peak RSS) and show --publisher for the busiest publisher.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg2
from collect_day import cli_command, load, run_measured

from idb_stats import embedded
from idb_stats.synthetic import fake_uuid

FIRST_EVENT_DAY = date(2025, 1, 1)  # a past year: every harvest date is closed
RECORDSETS = 1_600  # synthetic.Spec's default


def ingest(dsn: str, publishers: int) -> str:
    """recordsets and publishers as idb-backend has them; returns the busiest publisher's id."""
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE publishers (uuid uuid UNIQUE, name text);"
            "CREATE TABLE recordsets (uuid uuid UNIQUE, publisher_uuid uuid, name text NOT NULL)"
        )
        for p in range(publishers):
            cur.execute("INSERT INTO publishers VALUES (%s, %s)", (fake_uuid(3, p), f"Publisher {p}"))
        for i in range(RECORDSETS):
            cur.execute(
                "INSERT INTO recordsets VALUES (%s, %s, %s)",
                (fake_uuid(1, i), fake_uuid(3, i % publishers), f"Recordset {i}"),
            )
    conn.close()
    return fake_uuid(3, 0)  # holds recordset 0, the busiest (Zipf rank 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--publishers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    first, last = FIRST_EVENT_DAY + timedelta(days=1), FIRST_EVENT_DAY + timedelta(days=args.days)
    work = Path(tempfile.mkdtemp(prefix="idb-stats-monthly-"))
    print(
        f"idb-stats monthly-report benchmark {date.today()}: {args.rows_per_day} rows/day, {args.days} days"
    )
    server = embedded.start()
    try:
        dsn = server.create_database("telemetry")
        busiest = ingest(dsn, args.publishers)
        env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_STORE": "postgres", "IDB_STATS_API_DSN": dsn}
        started = time.monotonic()
        rows = load(
            dsn,
            [(FIRST_EVENT_DAY + timedelta(days=i), args.rows_per_day) for i in range(args.days)],
            args.seed,
        )
        print(f"loaded {rows} rows in {time.monotonic() - started:.0f} s")
        seconds, _, _ = run_measured(
            cli_command("-q", "collect-stats", "--from", str(first), "--to", str(last), "--jobs", "2"), env
        )
        print(f"collect-stats --jobs 2 over {args.days} days: {seconds:.0f} s")

        month = last.replace(day=1) - timedelta(days=1) if last.day < 28 else last
        out = work / "monthly"
        seconds, rss, printed = run_measured(
            cli_command("monthly-report", "--month", f"{month:%Y-%m}", "--out", str(out)), env
        )
        files = [p for p in out.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        print(f"\nmonthly-report: {printed.strip()}")
        print(
            f"monthly-report: {len(files)} files, {size / 1e6:.1f} MB, {seconds:.1f} s, {rss:.0f} MB peak RSS"
        )

        seconds, _, shown = run_measured(
            cli_command("show", "--publisher", busiest, "--interval", "month"), env
        )
        print(f"\nidb-stats show --publisher {busiest} --interval month ({seconds:.1f} s):\n{shown}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
