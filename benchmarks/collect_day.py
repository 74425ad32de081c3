"""Benchmark: aggregate one day of synthetic telemetry with each engine, against the floors, per shape.

    python benchmarks/collect_day.py [--shape today|wide|all] [--rows-per-day 200000] [--repeat 2]
                                     [--scales 1,2,4] [--days 1] [--seed 1]

Starts a throwaway PostgreSQL (log_temp_files=0) and, for each shape of day (idb_stats.synthetic
SHAPES: today's and the wide one of issue 18), loads seeded synthetic telemetry into a database of
its own (a day of --rows-per-day rows, and one of each further multiple in --scales) and measures,
each in its own process so that peak RSS and CPU belong to that step alone:

1. scan floor   one SQL pass expanding every payload entry of the day (count only);
2. write floor  the day's finished documents (exported from the store, parsed before the clock
                starts) published into an empty PostgreSQL store: COPY, totals, day marker;
3. row loop     the rules applied row at a time in Python over a server-side cursor
                (idb_stats.rules), one document per recordset, nothing written (1x only);
4. collect      `idb-stats collect-stats --date D` end to end into the PostgreSQL store, with
                collect.engine = "stream" (every scale) and "sql" (1x).

The floors and collect-stats run --repeat times at 1x, alternated. For every step: wall seconds,
its own CPU seconds (the process and its threads), the server's CPU seconds (the postmaster's
children, /proc/<pid>/stat, read once every backend has exited), peak RSS (VmHWM) and the
temporary files PostgreSQL wrote (pg_stat_database). collect-stats is given as a ratio to the sum
of the two floors, by wall and by CPU (its own and the server's against the floors' own and the
server's). Then checks that both engines' stores hold exactly the row loop's documents. With
--days N > 1 also compares --jobs 1 and --jobs 2 over N days. Ends with a table of both shapes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from idb_stats import embedded, rules, stream, synthetic
from idb_stats.config import load_config
from idb_stats.model import DayStats, event_window
from idb_stats.stores import open_store

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
    own_cpu: float = 0.0  # the step's process and threads
    server_cpu: float = 0.0
    temp_files: int = 0
    temp_bytes: int = 0
    # The machine's 1-minute load average as the step ended: wall times on a shared machine are
    # read beside it (CPU seconds, from /proc and rusage, are the steadier figures).
    load: float = 0.0

    @property
    def cpu(self) -> float:
        return self.own_cpu + self.server_cpu

    def line(self) -> str:
        rate = self.entries / self.seconds if self.seconds else 0.0
        return (
            f"{self.name:<34}{self.seconds:>9.2f} s{rate / 1e6:>8.2f} M entries/s"
            f"{self.peak_rss_mb:>9.1f} MB peak RSS"
            f"  CPU own {self.own_cpu:.1f} s server {self.server_cpu:.1f} s"
            f"  temp {self.temp_files} files {self.temp_bytes / 1e6:.1f} MB  load {self.load:.1f}"
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


def step_copy_bytes(dsn: str, harvest: date) -> dict[str, Any]:
    """What the stream engine's one COPY of the day sends: what would cross the network if the
    telemetry database were remote."""

    class Counter:
        size = 0

        def write(self, row: bytes) -> None:
            self.size += len(row)

    conn = psycopg2.connect(dsn)
    counter = Counter()
    with conn, conn.cursor() as cur:
        statement = stream.COPY_SQL.format(stats="stats", queries="queries")
        cur.copy_expert(
            cur.mogrify(statement, dict(zip(("start", "end"), event_window(harvest), strict=True))).decode(),
            counter,
        )
    conn.close()
    return {"bytes": counter.size}


def step_write(store_dsn: str, harvest: date, documents: Path) -> dict[str, Any]:
    """The write floor: publish finished documents (parsed before the clock starts) into an empty
    PostgreSQL store, as collect-stats' last step does; its own wall and CPU seconds."""
    docs = [json.loads(line) for line in documents.read_text().splitlines() if line.strip()]
    config = load_config(overrides={"source.dsn": store_dsn, "store.url": store_dsn}, environ={})
    with open_store(config) as store:
        store.init()
        stats = DayStats(harvest, "write-floor", recordsets=len(docs))
        started, cpu = time.monotonic(), time.process_time()
        store.publish_day(stats, docs)
        return {
            "documents": len(docs),
            "seconds": time.monotonic() - started,
            "cpu": time.process_time() - cpu,
        }


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


def measured(
    server: embedded.EmbeddedPostgres,
    name: str,
    args: list[str],
    entries: int,
    env: dict[str, str] | None = None,
) -> tuple[Measure, str]:
    """Run a step as its own process: its wall, own CPU (exited children of this script) and
    the server's CPU seconds and temporary files, its peak RSS, and its standard output."""
    before = server_counters(server)
    own = children_cpu_seconds()
    seconds, rss, out = run_measured(args, env)
    own = children_cpu_seconds() - own
    cost = server_cost(server, before)
    load = os.getloadavg()[0]
    return (
        Measure(name, seconds, rss, entries, own, cost.cpu_seconds, cost.temp_files, cost.temp_bytes, load),
        out,
    )


def collect(
    server: embedded.EmbeddedPostgres, source_dsn: str, store_dsn: str, engine: str, entries: int, *args: str
) -> Measure:
    env = {
        "IDB_STATS_SOURCE_DSN": source_dsn,
        "IDB_STATS_STORE": "postgres",
        "IDB_STATS_STORE_URL": store_dsn,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        config.write(f'[collect]\nengine = "{engine}"\n')
        config.flush()
        measure, _ = measured(
            server,
            f"collect-stats ({engine})",
            cli_command("-q", "collect-stats", "--config", config.name, *args),
            entries,
            env,
        )
    return measure


def export_documents(store_dsn: str, harvest: date) -> list[str]:
    """The store's documents of the day as NDJSON lines (inside export's opening and closing lines)."""
    env = {"IDB_STATS_SOURCE_DSN": store_dsn, "IDB_STATS_STORE": "postgres", "IDB_STATS_STORE_URL": store_dsn}
    _, _, exported = run_measured(
        cli_command("-q", "export", "--from", str(harvest), "--to", str(harvest)), env
    )
    return exported.splitlines()[1:-1]


def by_recordset(lines: Iterable[str]) -> dict[str, str]:
    docs = (json.loads(line) for line in lines if line.strip())
    return {doc["recordset_id"]: json.dumps(doc, sort_keys=True) for doc in docs}


def same_documents(baseline: Path, store_dsn: str, harvest: date) -> tuple[bool, int]:
    with baseline.open() as handle:
        expected = by_recordset(handle)
    return expected == by_recordset(export_documents(store_dsn, harvest)), len(expected)


@dataclass
class Scale:
    """One day's size: the floors and the stream engine's collect-stats at that size."""

    rows: int
    entries: int
    floor: list[Measure]
    write: Measure
    stream: list[Measure]
    documents: int

    @property
    def best_floor(self) -> Measure:
        return min(self.floor, key=lambda m: m.seconds)

    @property
    def best_stream(self) -> Measure:
        return min(self.stream, key=lambda m: m.seconds)

    def wall_ratio(self, measure: Measure) -> float:
        return measure.seconds / (self.best_floor.seconds + self.write.seconds)

    def cpu_ratio(self, measure: Measure) -> float:
        return measure.cpu / (min(m.cpu for m in self.floor) + self.write.cpu)


@dataclass
class ShapeResult:
    shape: str
    scales: dict[int, Scale]
    baseline: Measure
    sql: Measure
    stream_equal: bool
    sql_equal: bool
    copy_bytes: int  # the stream engine's COPY of the 1x day


def write_floor(
    server: embedded.EmbeddedPostgres, me: list[str], lines: list[str], harvest: date, work: Path, name: str
) -> Measure:
    """Publish the day's documents into an empty store of their own; the step's own figures."""
    documents = work / f"{name}.ndjson"
    documents.write_text("\n".join(lines) + "\n")
    store = server.create_database(name)
    measure, out = measured(
        server,
        "2 write floor (publish documents)",
        [*me, "--step", "write", "--store-dsn", store, "--out", str(documents)],
        0,
    )
    figures = json.loads(out)
    # The step's own wall and CPU around the publish alone (not parsing the documents first).
    measure.seconds, measure.own_cpu = figures["seconds"], figures["cpu"]
    return measure


def run_shape(
    server: embedded.EmbeddedPostgres, shape: synthetic.Shape, args: argparse.Namespace
) -> ShapeResult:
    """Load a day of `shape` (and one of each further scale) into a database of its own; measure."""
    days = [(FIRST_EVENT_DAY + timedelta(days=i), args.rows_per_day) for i in range(args.days)]
    scaled = {1: FIRST_EVENT_DAY + timedelta(days=1)}
    for i, scale in enumerate(s for s in args.scales if s != 1):
        day = FIRST_EVENT_DAY + timedelta(days=args.days + i)
        days.append((day, scale * args.rows_per_day))
        scaled[scale] = day + timedelta(days=1)
    source = server.create_database(f"telemetry_{shape.name}")
    started = time.monotonic()
    written = load(source, days, args.seed, shape)
    print(f"\n== shape {shape.name}: loaded {written} rows in {time.monotonic() - started:.0f} s")
    work = Path(tempfile.mkdtemp(prefix="idb-stats-bench-"))
    try:
        scales: dict[int, Scale] = {}
        sql: Measure | None = None
        for scale, harvest in sorted(scaled.items()):
            me = [__file__, "--dsn", source, "--harvest-date", str(harvest)]
            floors: list[Measure] = []
            streams: list[Measure] = []
            entries = 0
            store = ""
            # The floor and collect-stats alternate, so both see the same load of the machine.
            for run in range(args.repeat if scale == 1 else 1):
                floor, out = measured(server, "1 scan floor (SQL pass)", [*me, "--step", "floor"], 0)
                entries = floor.entries = json.loads(out)["entries"]
                floors.append(floor)
                print(f"{scale}x " + floor.line())
                store = server.create_database(f"store_{shape.name}_{scale}x_{run}")
                streams.append(collect(server, source, store, "stream", entries, "--date", str(harvest)))
                print(f"{scale}x " + streams[-1].line())
                if scale == 1 and run == 0:
                    sql_store = server.create_database(f"store_{shape.name}_sql")
                    sql = collect(server, source, sql_store, "sql", entries, "--date", str(harvest))
                    print(f"{scale}x " + sql.line())
            lines = export_documents(store, harvest)
            write = write_floor(server, me, lines, harvest, work, f"write_{shape.name}_{scale}x")
            print(f"{scale}x " + write.line())
            scales[scale] = Scale(scale * args.rows_per_day, entries, floors, write, streams, len(lines))
            if scale == 1:
                baseline_out = work / "baseline.ndjson"
                seconds, rss, out = run_measured([*me, "--step", "baseline", "--out", str(baseline_out)])
                baseline = Measure("3 row-at-a-time loop", seconds, rss, entries)
                print(baseline.line())
                stream_equal, _ = same_documents(baseline_out, store, harvest)
                _, _, out = run_measured([*me, "--step", "copy-bytes"])
                copy_bytes = json.loads(out)["bytes"]
                sql_equal, _ = same_documents(baseline_out, sql_store, harvest)
        assert sql is not None
        if args.days > 1:
            first, last = scaled[1], FIRST_EVENT_DAY + timedelta(days=args.days)
            for jobs in ("1", "2"):
                measure = collect(
                    server,
                    source,
                    server.create_database(f"jobs{jobs}_{shape.name}"),
                    "stream",
                    0,
                    "--from",
                    str(first),
                    "--to",
                    str(last),
                    "--jobs",
                    jobs,
                )
                print(f"collect-stats over {args.days} days, --jobs {jobs}: {measure.seconds:.1f} s")
        return ShapeResult(shape.name, scales, baseline, sql, stream_equal, sql_equal, copy_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scale_texts(result: ShapeResult, scale: int) -> tuple[str, str, str]:
    """The stream engine at a multiple of the rows: time and ratios, peak RSS against 1x, temp files."""
    at = result.scales.get(scale)
    if at is None:
        return "", "", ""
    best, one = at.best_stream, result.scales[1]
    rss_1x = max(m.peak_rss_mb for m in one.stream)
    target = "  (<= 1.25)" if scale == 4 else ""
    return (
        f"{best.seconds:.1f} / {at.wall_ratio(best):.2f}, {at.cpu_ratio(best):.2f}",
        f"{best.peak_rss_mb:.1f} MB, {best.peak_rss_mb / rss_1x:.2f}{target}",
        f"{best.temp_files}",
    )


def print_table(results: list[ShapeResult]) -> None:
    """The figures the targets refer to, one column per shape."""

    def row(label: str, cell: Callable[[ShapeResult], str]) -> None:
        print(f"{label:<44}" + "".join(f"{cell(r):>26}" for r in results))

    def runs(measures: list[Measure]) -> str:
        return " / ".join(f"{m.seconds:.2f}" for m in measures)

    def one(r: ShapeResult) -> Scale:
        return r.scales[1]

    print()
    row("shape", lambda r: r.shape)
    row("payload entries", lambda r: f"{one(r).entries / 1e6:.2f} M")
    row("scan floor s (each run)", lambda r: runs(one(r).floor))
    row("scan floor CPU s (server)", lambda r: f"{one(r).best_floor.server_cpu:.1f}")
    row("write floor s", lambda r: f"{one(r).write.seconds:.2f}")
    row(
        "write floor CPU s own / server",
        lambda r: f"{one(r).write.own_cpu:.1f} / {one(r).write.server_cpu:.1f}",
    )
    row("stream collect s (each run)", lambda r: runs(one(r).stream))
    row(
        "stream CPU s own / server",
        lambda r: f"{one(r).best_stream.own_cpu:.1f} / {one(r).best_stream.server_cpu:.1f}",
    )
    row("stream / floors, wall", lambda r: f"{one(r).wall_ratio(one(r).best_stream):.2f}  (<= 1.5)")
    row(
        "load average: floors / stream (1 min)",
        lambda r: f"{one(r).best_floor.load:.1f}, {one(r).write.load:.1f} / {one(r).best_stream.load:.1f}",
    )
    row("stream / floors, CPU", lambda r: f"{min(one(r).cpu_ratio(m) for m in one(r).stream):.2f}  (<= 2)")
    row("stream peak RSS MB", lambda r: f"{max(m.peak_rss_mb for m in one(r).stream):.1f}  (<= 150)")
    row("stream temp files (PostgreSQL)", lambda r: f"{max(m.temp_files for m in one(r).stream)}  (0)")
    row("sql collect s", lambda r: f"{r.sql.seconds:.2f}")
    row("sql CPU s own / server", lambda r: f"{r.sql.own_cpu:.1f} / {r.sql.server_cpu:.1f}")
    row("sql / floors, wall", lambda r: f"{one(r).wall_ratio(r.sql):.2f}")
    row("sql / floors, CPU", lambda r: f"{one(r).cpu_ratio(r.sql):.2f}")
    row("sql peak RSS MB", lambda r: f"{r.sql.peak_rss_mb:.1f}")
    row("sql temp files (PostgreSQL)", lambda r: f"{r.sql.temp_files}")
    row(
        "row-at-a-time loop s / peak RSS MB",
        lambda r: f"{r.baseline.seconds:.2f} / {r.baseline.peak_rss_mb:.0f}",
    )
    for scale in sorted({s for r in results for s in r.scales if s != 1}):
        labels = ("stream s / floors wall, CPU", "stream peak RSS / 1x", "PostgreSQL temp files")
        for i, label in enumerate(labels):
            row(
                f"{scale}x rows: {label}",
                functools.partial(lambda r, scale, i: scale_texts(r, scale)[i], scale=scale, i=i),
            )
    row(
        "COPY of the day MB / s at 1 Gbit/s",
        lambda r: f"{r.copy_bytes / 1e6:.0f} / {r.copy_bytes * 8 / 1e9:.1f}",
    )
    row("documents equal to the row loop's: stream", lambda r: f"{r.stream_equal} ({one(r).documents})")
    row("documents equal to the row loop's: sql", lambda r: f"{r.sql_equal} ({one(r).documents})")


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
        "--scales",
        type=lambda text: sorted({1, *(int(v) for v in text.split(","))}),
        default=[1, 2, 4],
        help="multiples of --rows-per-day to load and measure (default 1,2,4)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--step", choices=["floor", "baseline", "write", "copy-bytes"], help=argparse.SUPPRESS
    )
    parser.add_argument("--store-dsn", help=argparse.SUPPRESS)
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
    if args.step == "copy-bytes":
        print(json.dumps(step_copy_bytes(args.dsn, args.harvest_date)))
        return
    if args.step == "write":
        print(json.dumps(step_write(args.store_dsn, args.harvest_date, args.out)))
        return

    shapes = list(synthetic.SHAPES.values()) if args.shape == "all" else [synthetic.SHAPES[args.shape]]
    names = ", ".join(shape.name for shape in shapes)
    print(f"idb-stats benchmark {date.today()}: {args.rows_per_day} rows/day, shapes {names}")
    print(f"seed {args.seed}; machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    server = embedded.start(extra_settings={"log_temp_files": "0"})
    try:
        results = [run_shape(server, shape, args) for shape in shapes]
        print_table(results)
        if not all(r.stream_equal and r.sql_equal for r in results):
            raise SystemExit("the store's documents differ from the row loop's")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
