"""Which version of the policy file each policy-change event turned into which: the diff.

The audit log says who changed the policy file and when, but not (through the API, as the
simulator decides, see docs/audit.md) the text before and after. tsops keeps every write it
made (tsops.policy.store.History: the text before and after, and when). Between two of its
writes, the text may have changed under it: the `after` of one write and the `before` of the
next differ. A policy event of someone else that is the only one in such a gap changed exactly
that: its diff is known. After tsops's last write, the policy as it is now closes the gap.
Several events in one gap share one combined change: no single diff is claimed.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from tsops.audit.events import AuditEvent
from tsops.policy.store import Record

# tsops writes `written_at` to the second after the write: the API's event for that write is
# within a second either side of it.
SLOT = datetime.timedelta(seconds=1)


@dataclass(frozen=True)
class PolicyChange:
    """What one policy event changed, as far as tsops knows: the unified diff (None: not
    known), where the versions came from, and whether it was a write by tsops."""

    diff: str | None
    source: str
    tsops_write: int | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready data."""
        return {"diff": self.diff, "source": self.source, "tsops_write": self.tsops_write}


def unified(before: str, after: str, old_label: str, new_label: str) -> str:
    """The unified diff of two policy texts ("" when they are equal)."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True),
                                        after.splitlines(keepends=True), old_label, new_label))


def written_at(record: Record) -> datetime.datetime:
    """When tsops made a write (UTC)."""
    moment = datetime.datetime.strptime(record.written_at, "%Y-%m-%dT%H:%M:%SZ")
    return moment.replace(tzinfo=datetime.UTC)


def attribute(events: Sequence[AuditEvent], records: Sequence[Record],
              current: str | None) -> dict[int, PolicyChange]:
    """The change of each policy event (by its index in `events`, oldest first), where tsops's
    history (and `current`, the policy text now) tell it."""
    policy = [i for i, e in enumerate(events) if e.kind == "policy"]
    changes: dict[int, PolicyChange] = {}
    for i in policy:
        old, new = events[i].old, events[i].new
        if isinstance(old, str) and isinstance(new, str):
            changes[i] = PolicyChange(unified(old, new, "before", "after"), "the audit log")
    own: dict[int, int] = {}  # record position -> event index
    taken: set[int] = set()
    ordered = sorted(records, key=lambda r: r.number)
    for position, record in enumerate(ordered):
        moment = written_at(record)
        for i in policy:
            if i not in taken and abs(events[i].time - moment) <= SLOT:
                own[position] = i
                taken.add(i)
                break
    for position, i in own.items():
        record = ordered[position]
        changes.setdefault(i, PolicyChange(
            unified(record.before.text, record.after.text, f"before tsops write {record.number}",
                    f"after tsops write {record.number}"),
            f"tsops write {record.number}", record.number))
    for position, record in enumerate(ordered):
        start = events[own[position]].time if position in own else written_at(record) + SLOT
        if position + 1 < len(ordered):
            following = ordered[position + 1]
            end = (events[own[position + 1]].time if position + 1 in own
                   else written_at(following) - SLOT)
            closing, label = following.before.text, f"before tsops write {following.number}"
            source = "tsops's policy history"
        elif current is not None:
            end = datetime.datetime.max.replace(tzinfo=datetime.UTC)
            closing, label = current, "the policy file now"
            source = "tsops's policy history and the policy file now"
        else:
            continue
        inside = [i for i in policy if i not in taken and start < events[i].time < end]
        if len(inside) == 1:
            changes.setdefault(inside[0], PolicyChange(
                unified(record.after.text, closing, f"after tsops write {record.number}", label),
                source))
        elif len(inside) > 1:
            for i in inside:
                changes.setdefault(i, PolicyChange(
                    None, f"{len(inside)} changes between two versions tsops kept: no single "
                          "diff"))
    return changes
