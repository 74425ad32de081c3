"""Pure diffing of a republished day's numbers: what the change ledger records.

When a day that was already published is published again, each (recordset, day) whose count or
total changed in some block gets one record with the old and new figures of those blocks, the
reason and the run, so "why did my number change?" has an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from .model import BLOCKS
from .terminal import printable
from .totals import Summary

ChangeRecord = dict[str, Any]


def _figures(summary: Summary | None, block: tuple[str, str]) -> dict[str, int]:
    count, total = summary.counts.get(block, (0, 0)) if summary else (0, 0)
    return {"count": count, "total": total}


def diff_day(
    day: date,
    old: Mapping[str, Summary],
    new: Mapping[str, Summary],
    reason: str,
    run_id: str,
    changed_at: str,
) -> list[ChangeRecord]:
    """One record per recordset whose count or total changed in any block, with those blocks.

    A recordset new to the day changes from 0, one gone from it changes to 0.
    """
    records = []
    for recordset_id in sorted(old.keys() | new.keys()):
        before, after = old.get(recordset_id), new.get(recordset_id)
        blocks = {}
        for block in BLOCKS:
            was, now = _figures(before, block), _figures(after, block)
            if was != now:
                blocks[".".join(block)] = {"old": was, "new": now}
        if blocks:
            records.append(
                {
                    "changed_at": changed_at,
                    "harvest_date": day.isoformat(),
                    "recordset_id": recordset_id,
                    "reason": reason,
                    "run_id": run_id,
                    "blocks": blocks,
                }
            )
    return records


def selected(
    records: list[ChangeRecord], since: date | None = None, recordset_id: str | None = None
) -> list[ChangeRecord]:
    """Records changed on or after `since` (a UTC date) and of one recordset, oldest first."""
    kept = [
        r
        for r in records
        if (since is None or r["changed_at"][:10] >= since.isoformat())
        and (recordset_id is None or r["recordset_id"] == recordset_id)
    ]
    return sorted(kept, key=lambda r: (r["changed_at"], r["harvest_date"], r["recordset_id"]))


def as_text(record: ChangeRecord) -> str:
    """One change record as one line for a person: the recordset id (sent by clients) with control
    characters escaped, every changed block's old and new count and total."""
    blocks = ", ".join(
        f"{block} count {b['old']['count']}->{b['new']['count']} "
        f"total {b['old']['total']}->{b['new']['total']}"
        for block, b in record["blocks"].items()
    )
    return (
        f"{record['changed_at'][:19]} {record['harvest_date']} {printable(record['recordset_id'])} "
        f"{record['reason']} run {record['run_id']}: {blocks}"
    )
