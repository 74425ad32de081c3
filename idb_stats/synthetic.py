"""Synthetic telemetry that follows the source contract: for the demo, the tests and the benchmark.

Seeded, so the same arguments give the same rows. Popularity of recordsets and queries is
Zipf-skewed and the type mix resembles a portal's: mostly searches and records seen.

What a day looks like beyond its size is a Shape. TODAY is what this generator has always made
(few recordsets per search, a steep curve of queries, six geocodes, one client); WIDE is a day
like a real portal's, after the one measured in issue 18: searches over the whole portal return
hits from many recordsets, result pages mix recordsets, queries are many and evenly used, and
geocodes go down to the city.
"""

from __future__ import annotations

import io
import json
import random
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Any

from psycopg2 import sql

from .sqltext import table

TELEMETRY_SCHEMA = sql.SQL("""
CREATE TABLE IF NOT EXISTS {queries} (id bigserial PRIMARY KEY, query_hash text NOT NULL UNIQUE, query jsonb);
CREATE TABLE IF NOT EXISTS {stats} (
  id bigserial PRIMARY KEY, date timestamp NOT NULL, type text NOT NULL, record_type text,
  query_id bigint REFERENCES {queries}(id), source text, ip text, ip_geocode jsonb,
  payload jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS {date_index} ON {stats} (date);
""")

TYPE_MIX = {"search": 40, "seen": 40, "mapping": 10, "view": 9, "download": 1}
GEOCODES: list[dict[str, str] | None] = [
    {"country": "US", "region": "FL", "city": "Gainesville"},
    {"country": "US", "region": "CA", "city": "Berkeley"},
    {"country": "BR", "region": "SP", "city": "Sao Paulo"},
    {"country": "DE", "region": "BE", "city": "Berlin"},
    {"country": "AU"},
    {},
    None,
]


def fake_uuid(kind: int, index: int) -> str:
    middle = f"{index >> 48 & 0xFFFF:04x}-4{index >> 36 & 0xFFF:03x}-8{index >> 24 & 0xFFF:03x}"
    return f"{kind:08x}-{middle}-{index & 0xFFFFFF:012x}"


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return list(accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))


@dataclass(frozen=True)
class Shape:
    """What a day looks like, whatever its number of rows."""

    name: str
    # search/mapping/download: a payload draws int(search_scale * Pareto(search_alpha)) recordsets
    # (at most 200; a recordset drawn twice counts once).
    search_scale: float = 1.0
    search_alpha: float = 1.3
    # seen: a page of 1..page_max records, switching to another recordset before each record
    # with this probability (0: a page from one recordset, 1: every record from anywhere).
    page_max: int = 100
    page_switch: float = 0.2
    # a page starts at record int(Pareto(record_alpha)) of its recordset: the lower, the more
    # distinct records a day sees.
    record_alpha: float = 1.2
    queries: int = 20_000
    query_skew: float = 1.1  # Zipf exponent of query popularity; 0 is evenly spread
    # 0: the six fixed GEOCODES; otherwise a pool of this many, mostly down to the city.
    geocodes: int = 0
    addresses: int = 1  # distinct client addresses


TODAY = Shape("today")
# Issue 18's day (200,000 rows): 8.7 recordsets per search/mapping/download row, 47.4 records
# per seen page, about 4.7k of 5k queries used and evenly, thousands of geocodes.
WIDE = Shape(
    "wide",
    search_scale=4.6,
    search_alpha=1.6,
    page_max=94,
    page_switch=0.5,
    record_alpha=0.6,
    queries=5_000,
    query_skew=0.3,
    geocodes=5_000,
    addresses=20_000,
)
SHAPES = {shape.name: shape for shape in (TODAY, WIDE)}


def geocode_pool(size: int) -> list[dict[str, str] | None]:
    """`size` distinct geocodes, deterministic: mostly country, region and city, some country
    only, plus {} and None (unknown)."""
    pool: list[dict[str, str] | None] = [{}, None]
    countries = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(120)]
    index = 0
    while len(pool) < size:
        country = countries[index % len(countries)]
        if index % 10 == 0:
            pool.append({"country": country})
        else:
            pool.append({"country": country, "region": f"R{index % 37}", "city": f"City {index}"})
        index += 1
    return pool


@dataclass
class Spec:
    first_day: date  # calendar day of the first events (harvest date first_day + 1)
    days: int = 7
    rows_per_day: int = 2_000
    recordsets: int = 1_600
    records_per_recordset: int = 5_000
    seed: int = 1
    midnight_share: float = 0.01
    no_query_share: float = 0.05
    shape: Shape = TODAY

    @property
    def queries(self) -> int:
        return self.shape.queries


class Generator:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.recordsets = [fake_uuid(1, i) for i in range(spec.recordsets)]
        self.rs_weights = _zipf_weights(spec.recordsets)
        self.q_weights = _zipf_weights(spec.queries, spec.shape.query_skew)
        self.geocodes = GEOCODES if spec.shape.geocodes == 0 else geocode_pool(spec.shape.geocodes)
        self.types = list(TYPE_MIX)
        self.type_weights = list(accumulate(TYPE_MIX.values()))

    def _pick(self, cumulative: Sequence[float]) -> int:
        return bisect(cumulative, self.rng.random() * cumulative[-1])

    def query_hash(self, index: int) -> str:
        return f"q{index:015x}"

    def _recordset(self) -> int:
        return min(self._pick(self.rs_weights), self.spec.recordsets - 1)

    def _payload(self, event_type: str) -> dict[str, Any]:
        rng, shape = self.rng, self.spec.shape
        if event_type in ("view", "seen"):
            # A result page: distinct records, runs of them from the same recordset.
            size = 1 if event_type == "view" else rng.randint(1, shape.page_max)
            rs = self._recordset()
            first = int(rng.paretovariate(shape.record_alpha))  # popular records come first
            payload = {}
            for position in range(size):
                if rng.random() < shape.page_switch:
                    rs = self._recordset()
                record = (
                    rs * self.spec.records_per_recordset
                    + (first + position) % self.spec.records_per_recordset
                )
                payload[fake_uuid(2, record)] = self.recordsets[rs]
            return payload
        size = min(int(shape.search_scale * rng.paretovariate(shape.search_alpha)), 200)
        return {self.recordsets[self._recordset()]: int(rng.paretovariate(1.1)) for _ in range(size)}

    def address(self) -> str:
        if self.spec.shape.addresses == 1:
            return "127.0.0.1"
        index = self.rng.randrange(self.spec.shape.addresses)
        return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"

    def rows(self, day: date) -> Iterator[tuple[datetime, str, str, int | None, Any, dict[str, Any], str]]:
        """(date, type, record_type, query index or None, geocode, payload, client address) for
        one calendar day."""
        rng, spec = self.rng, self.spec
        rng.seed(spec.seed * 1_000_003 + day.toordinal())  # each day on its own: days can load in parallel
        start = datetime(day.year, day.month, day.day)
        for _ in range(spec.rows_per_day):
            at = (
                start
                if rng.random() < spec.midnight_share
                else start + timedelta(seconds=rng.uniform(0, 86399.999))
            )
            event_type = self.types[self._pick(self.type_weights)]
            record_type = "mediarecords" if rng.random() < 0.1 else "records"
            query = (
                None
                if rng.random() < spec.no_query_share
                else min(self._pick(self.q_weights), spec.queries - 1)
            )
            geo = self.geocodes[rng.randrange(len(self.geocodes))]
            yield at, event_type, record_type, query, geo, self._payload(event_type), self.address()


def create_schema(conn: Any, stats: str = "stats", queries: str = "queries") -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            TELEMETRY_SCHEMA.format(
                stats=table(stats),
                queries=table(queries),
                date_index=sql.Identifier(stats.split(".")[-1] + "_date_idx"),
            )
        )


def load_queries(conn: Any, spec: Spec, queries: str = "queries") -> dict[str, int]:
    """Fill the queries table; returns query hash -> id."""
    gen = Generator(spec)
    with conn, conn.cursor() as cur:
        buffer = io.StringIO()
        for i in range(spec.queries):
            query_json = json.dumps({"rq": {"scientificname": f"taxon {i}"}})
            buffer.write(f"{gen.query_hash(i)}\t{query_json}\n")
        buffer.seek(0)
        cur.copy_expert(sql.SQL("COPY {} (query_hash, query) FROM STDIN").format(table(queries)), buffer)
        cur.execute(sql.SQL("SELECT query_hash, id FROM {}").format(table(queries)))
        return dict(cur.fetchall())


def load_day(conn: Any, spec: Spec, day: date, query_ids: dict[str, int], stats: str = "stats") -> int:
    """Write one calendar day of telemetry rows; returns the number written."""
    gen = Generator(spec)
    buffer = io.StringIO()
    written = 0
    for at, event_type, record_type, query, geo, payload, address in gen.rows(day):
        query_id = "\\N" if query is None else str(query_ids[gen.query_hash(query)])
        geo_text = "\\N" if geo is None else json.dumps(geo)
        buffer.write(
            f"{at.isoformat(sep=' ')}\t{event_type}\t{record_type}\t{query_id}\t"
            f"search-api\t{address}\t{geo_text}\t{json.dumps(payload)}\n"
        )
        written += 1
    buffer.seek(0)
    with conn, conn.cursor() as cur:
        cur.copy_expert(
            sql.SQL(
                "COPY {} (date, type, record_type, query_id, source, ip, ip_geocode, payload) FROM STDIN"
            ).format(table(stats)),
            buffer,
        )
    return written


def load(conn: Any, spec: Spec, stats: str = "stats", queries: str = "queries") -> int:
    """Create and fill the telemetry tables; returns the number of stats rows written."""
    create_schema(conn, stats, queries)
    query_ids = load_queries(conn, spec, queries)
    return sum(
        load_day(conn, spec, spec.first_day + timedelta(days=offset), query_ids, stats)
        for offset in range(spec.days)
    )
