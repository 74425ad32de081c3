"""Benchmark: what keeping published numbers true costs, against the work of collecting a day.

    python benchmarks/recheck.py [--rows-per-day 200000] [--days 7] [--seed 1]

Starts a throwaway PostgreSQL, loads `--days` days of seeded synthetic telemetry and measures, on
the same data and in the same run:

1. floor        one SQL pass expanding every payload entry of one day (as collect_day.py);
2. fingerprint  the fingerprint of that day (what collect-stats adds to each day it reads);
3. re-check     the fingerprints of the `--days` days in one grouped query (what a plain
                catch-up adds with collect.recheck_days = --days);
4. collect      `idb-stats collect-stats --date D` end to end into a PostgreSQL store;
5. verify       `idb-stats verify --from D --to D` on that store.

Steps 1 to 3 run twice and the second, warm, figure is kept (the first reads the table from
disk for every later step). Targets: re-check <= 0.5 x floor; verify <= 1.2 x collect.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta

import psycopg2
from collect_day import FIRST_EVENT_DAY, FLOOR_SQL, cli_command, load, run_measured
from psycopg2 import sql

from idb_stats import embedded, fingerprint
from idb_stats.model import event_window


def timed(dsn: str, work: Callable[[psycopg2.extensions.cursor], object]) -> tuple[float, object]:
    """Wall seconds of the second of two runs (the first warms the cache), and its result."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            result = work(cur)
            started = time.monotonic()
            result = work(cur)
            return time.monotonic() - started, result
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=7, help="days loaded and re-checked")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    harvest_dates = [FIRST_EVENT_DAY + timedelta(days=i + 1) for i in range(args.days)]
    harvest = harvest_dates[-1]
    print(
        f"idb-stats re-check/verify benchmark {date.today()}: {args.rows_per_day} rows/day, {args.days} days"
    )
    print(f"seed {args.seed}; machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    server = embedded.start()
    try:
        source = server.create_database("telemetry")
        started = time.monotonic()
        written = load(source, [(d - timedelta(days=1), args.rows_per_day) for d in harvest_dates], args.seed)
        print(f"loaded {written} rows in {time.monotonic() - started:.0f} s\n")

        def floor(cur: psycopg2.extensions.cursor) -> object:
            cur.execute(FLOOR_SQL, event_window(harvest))
            return (cur.fetchone() or (0,))[0]

        def one_day(cur: psycopg2.extensions.cursor) -> object:
            start, end = event_window(harvest)
            cur.execute(
                fingerprint.day_sql(sql.Identifier("stats"), fingerprint.ROW_HASH),
                {"start": start, "end": end},
            )
            return fingerprint.from_row(cur.fetchone() or (0,) * 6)

        def recheck(cur: psycopg2.extensions.cursor) -> object:
            cur.execute(
                fingerprint.days_sql(sql.Identifier("stats"), fingerprint.ROW_HASH),
                fingerprint.days_params(harvest_dates),
            )
            return {row[0]: fingerprint.from_row(row[1:]) for row in cur}

        floor_s, entries = timed(source, floor)
        day_s, day_fp = timed(source, one_day)
        recheck_s, fps = timed(source, recheck)
        assert isinstance(fps, dict) and len(fps) == args.days and fps[harvest] == day_fp
        print(f"1 floor (SQL pass over {entries} entries):   {floor_s:8.2f} s")
        print(f"2 fingerprint of one day:                    {day_s:8.2f} s")
        print(f"3 re-check of {args.days} days (one grouped query):   {recheck_s:8.2f} s")

        store = server.create_database("store")
        env = {"IDB_STATS_SOURCE_DSN": source, "IDB_STATS_STORE": "postgres", "IDB_STATS_STORE_URL": store}
        collect_s, collect_rss, _ = run_measured(
            cli_command("-q", "collect-stats", "--date", str(harvest)), env
        )
        verify_s, verify_rss, out = run_measured(
            cli_command("-q", "verify", "--from", str(harvest), "--to", str(harvest)), env
        )
        print(
            f"4 collect-stats of the day:                  {collect_s:8.2f} s {collect_rss:8.1f} MB peak RSS"
        )
        print(f"5 verify of the day:                         {verify_s:8.2f} s {verify_rss:8.1f} MB peak RSS")
        print(f"  verify said: {out.strip()}")
        print(f"\nratio 2/1 (fingerprint / floor):  {day_s / floor_s:.2f}")
        print(f"ratio 3/1 (re-check / floor):     {recheck_s / floor_s:.2f}  (target <= 0.5)")
        print(f"ratio 5/4 (verify / collect):     {verify_s / collect_s:.2f}  (target <= 1.2)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
