"""Benchmark: the HTML report of a year for 1,600 recordsets, and `show` on a cohort.

    python benchmarks/report_year.py [--rows-per-day 2000] [--days 365] [--recordsets 1600] [--keep DIR]

Loads a year of synthetic telemetry (the same generator as collect_day.py, with fewer rows per
day so a year loads in minutes), collects every day into the PostgreSQL store with --jobs 2, then
times `idb-stats report` over the whole year and `idb-stats show` for a cohort, and prints the
report's page count, total size and largest page. --keep copies the report to DIR to look at.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from collect_day import cli_command, load, run_measured

from idb_stats import embedded

# A past year, so every harvest date is closed (collect-stats refuses days still open): with the
# collect benchmark's 2026, the run of 2026-11-26 skipped the last 36 days.
FIRST_EVENT_DAY = date(2025, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="copy the generated report here")
    args = parser.parse_args()

    first, last = FIRST_EVENT_DAY + timedelta(days=1), FIRST_EVENT_DAY + timedelta(days=args.days)
    work = Path(tempfile.mkdtemp(prefix="idb-stats-report-"))
    print(f"idb-stats report benchmark {date.today()}: {args.rows_per_day} rows/day, {args.days} days")
    server = embedded.start()
    try:
        dsn = server.create_database("telemetry")
        env = {"IDB_STATS_SOURCE_DSN": dsn, "IDB_STATS_STORE": "postgres"}
        started = time.monotonic()
        days = [(FIRST_EVENT_DAY + timedelta(days=i), args.rows_per_day) for i in range(args.days)]
        rows = load(dsn, days, args.seed)
        print(f"loaded {rows} rows in {time.monotonic() - started:.0f} s")
        seconds, _, _ = run_measured(
            cli_command("-q", "collect-stats", "--from", str(first), "--to", str(last), "--jobs", "2"), env
        )
        print(f"collect-stats --jobs 2 over {args.days} days: {seconds:.0f} s")

        out = work / "site"
        seconds, rss, printed = run_measured(
            cli_command("report", "--from", str(first), "--to", str(last), "--out", str(out)), env
        )
        pages = list(out.rglob("*.html"))
        size = sum(p.stat().st_size for p in pages)
        print(f"\nreport: {printed.strip()}")
        print(
            f"report: {len(pages)} pages, {size / 1e6:.1f} MB in all, {seconds:.1f} s, {rss:.0f} MB peak RSS"
        )
        largest = max((out / "recordsets").iterdir(), key=lambda p: p.stat().st_size)
        print(f"largest recordset page: {largest.name} {largest.stat().st_size / 1e3:.0f} kB")
        print(f"index.html: {(out / 'index.html').stat().st_size / 1e3:.0f} kB")

        # A cohort of three busy recordsets (Zipf ranks 1, 2 and 10).
        cohort = [f"00000001-0000-4000-8000-{i:012x}" for i in (0, 1, 9)]
        seconds, _, shown = run_measured(
            cli_command(
                "show", *cohort, "--from", str(first), "--to", str(last), "--interval", "month", "--sum"
            ),
            env,
        )
        print(f"\nidb-stats show {' '.join(cohort)} --interval month --sum  ({seconds:.1f} s):\n{shown}")
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
            print(f"report copied to {args.keep}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
