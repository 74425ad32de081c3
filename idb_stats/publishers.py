"""Publisher roll-ups: a publisher's numbers are the sums of its recordsets' (`show --publisher`,
the report's publisher pages, monthly-report).

Membership is the ingest database's when the command runs (names.Names): every day of the range
is summed over the recordsets the publisher has now. The sums are grouped in the store, as for
any cohort (cohort.query with summed=True). Beside the range: the same number of days just before
it (previous period) and the year to date (1 January of the range's last year through its last
day), so "how are we doing" needs no second command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

from . import cohort
from .errors import UsageError
from .names import Names
from .ports import Store
from .terminal import printable


@dataclass(frozen=True)
class Span:
    first: date
    last: date

    def as_json(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


@dataclass(frozen=True)
class Comparison:
    """Block totals over a span (cohort.FIELDS keys)."""

    span: Span
    totals: dict[str, int]


@dataclass
class Rollup:
    publisher_id: str
    publisher_name: str
    recordsets: list[str]  # the publisher's recordsets now, sorted
    cohort: cohort.Cohort  # the range, summed over its recordsets
    previous: Comparison
    year_to_date: Comparison


def resolve(names: Names, publisher: str) -> tuple[str, list[str]]:
    """A publisher named by id (or by its exact name, when that names only one) and its recordsets."""
    if publisher not in names.publishers and publisher not in names.publisher_of.values():
        matches = [p for p, name in names.publishers.items() if name == publisher]
        if len(matches) != 1:
            detail = (
                "names several publishers; give its id"
                if matches
                else "is no publisher the ingest database knows"
            )
            raise UsageError(f"--publisher {printable(publisher)}: {detail} (check the id)")
        publisher = matches[0]
    recordsets = names.recordsets_of(publisher)
    if not recordsets:
        raise UsageError(f"--publisher {printable(publisher)}: has no recordsets in the ingest database")
    return publisher, recordsets


def spans(first: date, last: date) -> tuple[Span, Span]:
    """The previous period (as many days, just before) and the year to date of a range."""
    days = (last - first).days + 1
    previous = Span(first - timedelta(days=days), first - timedelta(days=1))
    return previous, Span(last.replace(month=1, day=1), last)


def _totals(store: Store, recordsets: list[str], span: Span) -> dict[str, int]:
    rows = store.series(recordsets, span.first, span.last, "year", by_recordset=False)
    return {name: sum(row[name] for row in rows) for name in cohort.FIELDS}


def rollup(
    store: Store,
    names: Names,
    publisher: str,
    first: date,
    last: date,
    interval: str,
    top: int,
) -> Rollup:
    publisher_id, recordsets = resolve(names, publisher)
    previous, ytd = spans(first, last)
    return Rollup(
        publisher_id,
        names.publisher(publisher_id),
        recordsets,
        cohort.query(store, recordsets, first, last, interval, True, top),
        Comparison(previous, _totals(store, recordsets, previous)),
        Comparison(ytd, _totals(store, recordsets, ytd)),
    )


def as_json(r: Rollup) -> str:
    data = json.loads(cohort.as_json(r.cohort))
    data.update(
        publisher_id=r.publisher_id,
        publisher_name=r.publisher_name,
        previous_period={**r.previous.span.as_json(), "totals": r.previous.totals},
        year_to_date={**r.year_to_date.span.as_json(), "totals": r.year_to_date.totals},
    )
    return json.dumps(data, indent=2)


def as_csv(r: Rollup) -> str:
    """The summed series, as `show --sum --format csv` writes it."""
    return cohort.as_csv(r.cohort)


def as_table(r: Rollup) -> str:
    """A heading naming the publisher, the summed series, then the range against the previous
    period and the year to date for every block with activity in any of them."""
    heading = (
        f"publisher {printable(r.publisher_name)} ({printable(r.publisher_id)}), "
        f"{len(r.recordsets)} recordsets (membership as of today)\n\n"
    )
    now = r.cohort.totals
    active = [n for n in cohort.FIELDS if now[n] or r.previous.totals[n] or r.year_to_date.totals[n]]
    if not active:
        return heading + cohort.as_table(r.cohort)
    p, y = r.previous.span, r.year_to_date.span
    table = [
        [
            "block",
            "this range",
            f"previous {p.first}..{p.last}",
            "change",
            f"year to date {y.first}..{y.last}",
        ],
        *(
            [
                n,
                f"{now[n]:,}",
                f"{r.previous.totals[n]:,}",
                change(now[n], r.previous.totals[n]),
                f"{r.year_to_date.totals[n]:,}",
            ]
            for n in active
        ),
    ]
    return heading + cohort.as_table(r.cohort) + "\n" + "\n".join(cohort.align(table, 1)) + "\n"


def change(now: int, before: int) -> str:
    """Relative change, or "new" when there was nothing before."""
    if before == 0:
        return "new" if now else "-"
    return f"{(now - before) / before:+.0%}"


FORMATTERS = {"table": as_table, "json": as_json, "csv": as_csv}


def default_range(store: Store, first: date | None, last: date | None) -> tuple[date, date]:
    """A range left open ends at the store's last complete day and starts on 1 January of its year."""
    if last is None:
        complete = store.completed_days()
        if not complete:
            raise UsageError("the store holds no complete day yet: give --from and --to, or collect first")
        last = max(complete)
    if first is None:
        first = last.replace(month=1, day=1)
    if first > last:
        raise UsageError(f"--from {first} is after the last day {last}; give an earlier --from")
    return first, last
