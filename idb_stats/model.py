"""The vocabulary shared by the core, the adapters and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, NamedTuple

RECORD_TYPES = ("records", "mediarecords")
EVENT_TYPES = ("search", "seen", "mapping", "view", "download")
# Events whose payload maps record uuid -> recordset uuid (one entry = one record).
PER_RECORD_TYPES = ("view", "seen")
# The rule "a view has no query breakdown" (docs/counting.md): the query of a row of these event
# types adds to no `queries` list. rules.py and the source's SQL read it from here.
UNQUERIED_TYPES = ("view",)
# The portal's search API also logs views of recordset and publisher pages (/v2/view/:t/:uuid) as
# rows of record_type "recordsets" / "publishers", type "view", whose payload is keyed by the
# page's uuid (the original collector ignored them). Each key is one page view.
PAGE_TYPES = ("recordsets", "publishers")
PAGE_EVENT = "view"
# A recordset page's views are a block of that recordset's daily document (recordsets.view); a
# publisher page's views go to a publisher document of their own (PUBLISHER_BLOCK).
RECORDSET_PAGE_BLOCK = ("recordsets", PAGE_EVENT)
PUBLISHER_BLOCK = ("publishers", PAGE_EVENT)
BLOCKS = (*((rt, ty) for rt in RECORD_TYPES for ty in EVENT_TYPES), RECORDSET_PAGE_BLOCK)
# The blocks whose entries are records, broken down by record in `items`.
ITEM_BLOCKS = tuple((rt, ty) for rt, ty in BLOCKS if rt in RECORD_TYPES and ty in PER_RECORD_TYPES)
# The top-level keys of a daily document (and of a totals document), in order.
DOCUMENT_RECORD_TYPES = tuple(dict.fromkeys(rt for rt, _ in BLOCKS))
# The additive figures of a block, in the order series columns and stored counts use.
COUNT_FIELDS = tuple((rt, ty, f) for rt, ty in BLOCKS for f in ("count", "total"))

# COUNTER-style figures (docs/counting.md, "COUNTER-style figures"): views of records and media
# records are investigations, downloads are requests and also investigations, as in COUNTER.
INVESTIGATION_EVENT = "view"
REQUEST_EVENT = "download"
# A repeat of the same item by the same session at most this many seconds after the previous one
# is a double click: the chain counts once (COUNTER's double-click rule, 30 s at most between).
DOUBLE_CLICK_SECONDS = 30
# The document's key of the figures and their names; helper code and the monthly report read these.
COUNTER_KEY = "counter"
COUNTER_METRICS = ("investigations", "requests")
COUNTER_FIELDS = ("total", "unique")

OTHER_TERM = "__other__"
# Cell kinds that carry a whole ranked breakdown list (see Cell).
UNKNOWN_COUNTRY = "unknown"

# Why a telemetry row was skipped, in the order the rules check them; rules.skip_reason and the
# SQL in the source assign exactly these (docs/counting.md says what each means).
SKIP_REASONS = (
    "unknown_record_type",
    "unknown_type",
    "geocode_not_object",
    "bad_geocode_value",
    "oversized_geocode",
    "payload_not_object",
    "empty_key",
    "bad_recordset_value",
    "bad_hit_count",
    "oversized_id",
)
# Hit counts are integers in [0, MAX_HITS]: exact in a double, as the search engines sum them.
MAX_HITS = 2**53 - 1
# The longest record or recordset id kept, in UTF-8 bytes: a search engine's document id (the
# recordset id, "-" and the harvest date) is at most 512 bytes, and PostgreSQL's btree keys far
# less than a megabyte-long id.
MAX_ID_BYTES = 500
# The largest geocode kept: its keys and values together, in UTF-8 bytes. A row's geocode is
# copied into the document of every recordset its payload names, so one row of a 1 MB city and
# 200 recordsets wrote 191 MB of documents (the engine probe). A real one (country, region, city,
# maybe coordinates as text) is well under 200 bytes.
MAX_GEOCODE_BYTES = 1_000


def event_window(harvest_date: date) -> tuple[date, date]:
    """Harvest date D covers the events in [D-1 00:00, D 00:00): midnight belongs to D+1's run."""
    return harvest_date - timedelta(days=1), harvest_date


@dataclass
class SkipReason:
    rows: int = 0
    example_ids: list[int] = field(default_factory=list)


@dataclass
class SkipReport:
    """How many of a day's rows were read, which were skipped, by reason, and how many the rules
    accepted, by record_type (kinds)."""

    rows: int = 0
    reasons: dict[str, SkipReason] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(r.rows for r in self.reasons.values())

    @property
    def skipped_share(self) -> float:
        return self.skipped / self.rows if self.rows else 0.0

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {k: {"rows": v.rows, "example_ids": v.example_ids} for k, v in sorted(self.reasons.items())}


class Cell(NamedTuple):
    """One aggregated value of a day, as the source streams it (grouped by recordset).

    kind is "geo" (key: canonical JSON of the geocode; entries and hits), "item" (key: record uuid)
    or "query" (key: query hash); hits is the value the rules add to the breakdown lists.
    A source may instead send a block's whole list at once, as a JSON list of [key, hits] pairs in
    any order: kind "items", key a record uuid; kind "geocodes" or "queries", key a rank naming an
    entry of the day's geocode or query table (TelemetryDay.geocodes, .queries), in the order that
    breaks ties between equal hits. A "geocodes" cell's entries and hits are the block's count and
    total.
    """

    recordset_id: str
    record_type: str
    type: str
    kind: str
    key: str
    entries: int
    hits: int


@dataclass(frozen=True)
class CounterFigures:
    """A recordset's COUNTER-style figures of one day: totals after the double-click rule, and
    uniques as the number of distinct sessions."""

    investigations_total: int = 0
    investigations_unique: int = 0
    requests_total: int = 0
    requests_unique: int = 0

    def as_block(self) -> dict[str, dict[str, int]]:
        """The document's `counter` block."""
        return {
            "investigations": {"total": self.investigations_total, "unique": self.investigations_unique},
            "requests": {"total": self.requests_total, "unique": self.requests_unique},
        }

    @classmethod
    def from_block(cls, block: dict[str, Any]) -> CounterFigures:
        return cls(
            int(block["investigations"]["total"]),
            int(block["investigations"]["unique"]),
            int(block["requests"]["total"]),
            int(block["requests"]["unique"]),
        )


# A day's COUNTER-style figures by recordset; None where the telemetry cannot give them (no `ip`
# column): then documents carry no `counter` block, which readers take as unknown, not zero.
CounterDay = dict[str, CounterFigures] | None


@dataclass
class DayStats:
    """Figures of one harvest day, filled in while its documents stream by."""

    harvest_date: date
    run_id: str = ""
    rows: int = 0
    skipped: int = 0
    entries: int = 0
    recordsets: int = 0
    skip_reasons: dict[str, dict[str, object]] = field(default_factory=dict)
    # Accepted rows by record_type: records, mediarecords and the page views (PAGE_TYPES).
    kinds: dict[str, int] = field(default_factory=dict)
    publishers: int = 0  # publisher documents written
    seconds: float = 0.0
    # Of the source rows the day was computed from (fingerprint.py); None when not read from a source.
    fingerprint: dict[str, Any] | None = None
    # Why the day was (re)published, recorded with any change to published numbers (changes.py).
    reason: str = "collect"

    def as_dict(self) -> dict[str, object]:
        return {
            "harvest_date": self.harvest_date.isoformat(),
            "run_id": self.run_id,
            "rows": self.rows,
            "skipped": self.skipped,
            "entries": self.entries,
            "recordsets": self.recordsets,
            "skip_reasons": self.skip_reasons,
            "kinds": dict(sorted(self.kinds.items())),
            "publishers": self.publishers,
            "seconds": round(self.seconds, 3),
            "fingerprint": self.fingerprint,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class HeldDays:
    """What a store holds of each harvest date, read from its own data rather than its completion
    marks: a publish killed part-way leaves documents without a mark, a lost shard a mark without
    its documents, and only these counts show it (planning.assess_days)."""

    documents: dict[date, int] = field(default_factory=dict)  # daily documents per harvest date
    listed: dict[date, int] = field(default_factory=dict)  # recordsets whose totals list the day
    # Days whose publish or forget-day began and never finished (search stores mark them so; a
    # PostgreSQL day is one transaction), with the run that began it.
    unfinished: dict[date, str] = field(default_factory=dict)
