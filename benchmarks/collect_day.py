"""Benchmark: aggregate one day of synthetic telemetry three ways, on the same data, per shape of day.

    python benchmarks/collect_day.py [--shape today|wide|all] [--rows-per-day 200000] [--repeat 2]
                                     [--no-double] [--days 1] [--seed 1]

Starts a throwaway PostgreSQL (log_temp_files=0) and, for each shape of day (idb_stats.synthetic
SHAPES: today's and the wide one of issue 18), loads seeded synthetic telemetry into a database of
its own and measures, each in its own process so that peak RSS belongs to that step alone:

1. floor     one SQL pass expanding every payload entry of the day (count only);
2. baseline  the rules applied row at a time in Python over a server-side cursor (idb_stats.rules),
             one document per recordset, nothing written: what the original collector did;
3. collect   `idb-stats collect-stats --date D` end to end into the PostgreSQL store.

The floor and collect-stats run --repeat times, alternated. For collect-stats it also prints its
own CPU seconds, the server's CPU seconds and the temporary files PostgreSQL wrote
(pg_stat_database). Then checks that the store holds exactly the baseline's documents, runs
collect-stats on a day of twice the rows (unless --no-double), and with --days N > 1 compares
--jobs 1 and --jobs 2 over N days. Ends with a table of both shapes side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


def load(dsn: str, days: list[tuple[date, int]], seed: int, shape: synthetic.Shape = synthetic.TODAY) -> int:
    """Create the telemetry tables and fill the given (calendar day, rows) on both cores."""
    conn = psycopg2.connect(dsn)
    spec = synthetic.Spec(first_day=FIRST_EVENT_DAY, seed=seed, shape=shape)
    synthetic.create_schema(conn)
    query_ids = synthetic.load_queries(conn, spec)
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(
                _load_day,
                dsn,
                synthetic.Spec(first_day=day, rows_per_day=rows, seed=seed, shape=shape),
                day,
                query_ids,
            )
            for day, rows in days
        ]
        written = sum(f.result() for f in futures)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE stats")
    conn.close()
    return written


@dataclass
class ServerCost:
    """What a step cost the PostgreSQL server: temporary files written and CPU seconds."""

    temp_files: int
    temp_bytes: int
    cpu_seconds: float


def server_counters(server: embedded.EmbeddedPostgres) -> ServerCost:
    """Cumulative temp files/bytes of every database and the CPU time of the server's exited
    processes (a backend's time reaches the postmaster's cutime/cstime once it has exited).
    Waits until no other client backend is left, so the step's figures are all counted."""
    conn = psycopg2.connect(server.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
                if (cur.fetchone() or (0,))[0] == 0:
                    break
                time.sleep(0.05)
            cur.execute("SELECT sum(temp_files)::bigint, sum(temp_bytes)::bigint FROM pg_stat_database")
            files, size = cur.fetchone() or (0, 0)
    finally:
        conn.close()
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ServerCost(int(files or 0), int(size or 0), ticks / os.sysconf("SC_CLK_TCK"))


def children_cpu_seconds() -> float:
    """CPU seconds of this script's exited children (a measured step's own CPU time, apart from
    the server's): on a shared machine, wall time includes waiting for a core."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cost(server: embedded.EmbeddedPostgres, before: ServerCost) -> ServerCost:
    after = server_counters(server)
    return ServerCost(
        after.temp_files - before.temp_files,
        after.temp_bytes - before.temp_bytes,
        after.cpu_seconds - before.cpu_seconds,
    )


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
    actual = by_recordset(iter(exported.splitlines()[1:-1]))  # inside export's opening and closing lines
    return expected == actual, len(expected)


@dataclass
class ShapeResult:
    shape: str
    entries: int
    floor: list[Measure]
    floor_cost: ServerCost
    baseline: Measure
    collect: list[Measure]
    collect_cost: list[ServerCost]
    equal: bool
    documents: int
    double: Measure | None = None
    double_cost: ServerCost | None = None

    @property
    def best_floor(self) -> float:
        return min(m.seconds for m in self.floor)

    @property
    def best_collect(self) -> Measure:
        return min(self.collect, key=lambda m: m.seconds)


def run_shape(
    server: embedded.EmbeddedPostgres, shape: synthetic.Shape, args: argparse.Namespace
) -> ShapeResult:
    """Load a day of `shape` (and one of twice its rows) into a database of its own; measure."""
    days = [(FIRST_EVENT_DAY + timedelta(days=i), args.rows_per_day) for i in range(args.days)]
    double_day = FIRST_EVENT_DAY + timedelta(days=args.days)
    if args.double:
        days.append((double_day, 2 * args.rows_per_day))
    harvest = FIRST_EVENT_DAY + timedelta(days=1)
    source = server.create_database(f"telemetry_{shape.name}")
    started = time.monotonic()
    written = load(source, days, args.seed, shape)
    print(f"\n== shape {shape.name}: loaded {written} rows in {time.monotonic() - started:.0f} s")
    me = [__file__, "--dsn", source, "--harvest-date", str(harvest)]
    work = Path(tempfile.mkdtemp(prefix="idb-stats-bench-"))
    try:
        # The floor and collect-stats alternate, so both see the same load of the machine.
        floors: list[Measure] = []
        collects: list[Measure] = []
        collect_costs: list[ServerCost] = []
        entries = 0
        floor_cost = ServerCost(0, 0, 0.0)
        for run in range(args.repeat):
            before = server_counters(server)
            seconds, rss, out = run_measured([*me, "--step", "floor"])
            floor_cost = server_cost(server, before)
            entries = json.loads(out)["entries"]
            floors.append(Measure("1 floor (SQL pass over entries)", seconds, rss, entries))
            print(floors[-1].line() + f"  server {floor_cost.cpu_seconds:.1f} CPU s")
            store = server.create_database(f"store_{shape.name}_{run}")
            before = server_counters(server)
            own_cpu = children_cpu_seconds()
            seconds, rss = collect(source, store, "--date", str(harvest))
            own_cpu = children_cpu_seconds() - own_cpu
            collect_costs.append(server_cost(server, before))
            collects.append(Measure("3 collect-stats end to end", seconds, rss, entries))
            print(
                collects[-1].line()
                + f"  own {own_cpu:.1f} CPU s, server {collect_costs[-1].cpu_seconds:.1f} CPU s,"
                + f" temp {collect_costs[-1].temp_files} files {collect_costs[-1].temp_bytes / 1e6:.1f} MB"
            )
        baseline_out = work / "baseline.ndjson"
        seconds, rss, out = run_measured([*me, "--step", "baseline", "--out", str(baseline_out)])
        baseline = Measure("2 row-at-a-time baseline", seconds, rss, entries)
        print(baseline.line())
        equal, documents = same_documents(baseline_out, store, harvest)
        result = ShapeResult(
            shape.name, entries, floors, floor_cost, baseline, collects, collect_costs, equal, documents
        )
        if args.days > 1:
            first, last = harvest, FIRST_EVENT_DAY + timedelta(days=args.days)
            one, _ = collect(
                source, server.create_database(f"jobs1_{shape.name}"), "--from", str(first), "--to", str(last)
            )
            two, _ = collect(
                source,
                server.create_database(f"jobs2_{shape.name}"),
                "--from",
                str(first),
                "--to",
                str(last),
                "--jobs",
                "2",
            )
            print(f"collect-stats over {args.days} days: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s")
            print(f"ratio jobs 1 / jobs 2: {one / two:.2f}  (target >= 1.6)")
        if args.double:
            before = server_counters(server)
            seconds, rss = collect(source, store, "--date", str(double_day + timedelta(days=1)))
            result.double_cost = server_cost(server, before)
            result.double = Measure("3 collect-stats, 2x rows", seconds, rss, 0)
            print(f"collect-stats on {2 * args.rows_per_day} rows: {seconds:.2f} s, {rss:.1f} MB peak RSS")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(results: list[ShapeResult]) -> None:
    """The figures the targets refer to, one column per shape."""

    def row(label: str, cell: Callable[[ShapeResult], str]) -> None:
        print(f"{label:<38}" + "".join(f"{cell(r):>22}" for r in results))

    def runs(measures: list[Measure]) -> str:
        return " / ".join(f"{m.seconds:.2f}" for m in measures)

    print()
    row("shape", lambda r: r.shape)
    row("payload entries", lambda r: f"{r.entries / 1e6:.2f} M")
    row("floor s (each run)", lambda r: runs(r.floor))
    row("row-at-a-time loop s", lambda r: f"{r.baseline.seconds:.2f}")
    row("row-at-a-time loop peak RSS MB", lambda r: f"{r.baseline.peak_rss_mb:.1f}")
    row("collect-stats s (each run)", lambda r: runs(r.collect))
    row("collect / floor (best of each)", lambda r: f"{r.best_collect.seconds / r.best_floor:.2f}  (<= 3)")
    row("collect-stats peak RSS MB", lambda r: f"{max(m.peak_rss_mb for m in r.collect):.1f}  (<= 120)")
    row("temp files written (collect)", lambda r: f"{max(c.temp_files for c in r.collect_cost)}  (0)")
    row("temp bytes (collect)", lambda r: f"{max(c.temp_bytes for c in r.collect_cost)}  (0)")
    row(
        "server CPU s: floor / collect",
        lambda r: f"{r.floor_cost.cpu_seconds:.1f} / {r.collect_cost[-1].cpu_seconds:.1f}",
    )
    row("row loop / collect", lambda r: f"{r.baseline.seconds / r.best_collect.seconds:.2f}")
    if all(r.double for r in results):
        row(
            "2x rows: time ratio",
            lambda r: f"{r.double.seconds / r.best_collect.seconds:.2f}  (<= 2.2)" if r.double else "",
        )
        row(
            "2x rows: peak RSS ratio",
            lambda r: (
                f"{r.double.peak_rss_mb / max(m.peak_rss_mb for m in r.collect):.2f}  (<= 1.25)"
                if r.double
                else ""
            ),
        )
        row("2x rows: temp bytes", lambda r: f"{r.double_cost.temp_bytes}" if r.double_cost else "")
    row("documents equal to the row loop's", lambda r: f"{r.equal} ({r.documents})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=[*synthetic.SHAPES, "all"], default="all")
    parser.add_argument("--rows-per-day", type=int, default=200_000)
    parser.add_argument(
        "--days", type=int, default=1, help="days loaded; more than 1 compares --jobs 1 and 2 over them"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of the floor and of collect-stats")
    parser.add_argument(
        "--no-double", dest="double", action="store_false", help="skip the day of twice the rows"
    )
    parser.add_argument("--seed", type=int, default=1)
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

    shapes = list(synthetic.SHAPES.values()) if args.shape == "all" else [synthetic.SHAPES[args.shape]]
    names = ", ".join(shape.name for shape in shapes)
    print(f"idb-stats benchmark {date.today()}: {args.rows_per_day} rows/day, shapes {names}")
    print(f"seed {args.seed}; machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    server = embedded.start(extra_settings={"log_temp_files": "0"})
    try:
        results = [run_shape(server, shape, args) for shape in shapes]
        print_table(results)
        if not all(r.equal for r in results):
            raise SystemExit("the store's documents differ from the row loop's")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
