"""The list page's filters, sorting and paging, read from a URL's query string (pure code).

Every text filter matches a part of its field, without regard to case. A bad value is a
QueryError whose message names the field, shown in the page with status 400.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from tsops.errors import UsageError
from tsops.recordings.catalog import SORT_KEYS, Recording, parse_when

PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_TEXT = 200
TEXT_FIELDS = ("server", "ssh_user", "source_user", "source_node", "command", "since", "until")


class QueryError(UsageError):
    """A filter, sort or page in the URL that cannot work (status 400)."""


@dataclass(frozen=True)
class Query:
    """What the list shows: filters (empty: any), sort key and order, page."""

    server: str = ""  # the SSH server: its stable node ID or its name
    ssh_user: str = ""  # the SSH user or the local user it became
    source_user: str = ""  # who connected: the source node's owner or its tags
    source_node: str = ""  # the source node's name or ID
    command: str = ""
    since: str = ""  # as typed: an ISO date or time, or an age such as 24h
    until: str = ""
    sort: str = "start"
    order: str = "desc"
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        """The query a URL's parameters describe; QueryError naming a bad one."""
        values: dict[str, str] = {}
        for name in TEXT_FIELDS:
            value = params.get(name, "").strip()
            if len(value) > MAX_TEXT:
                raise QueryError(f"{name}: longer than {MAX_TEXT} characters")
            values[name] = value
        sort = params.get("sort", "start") or "start"
        if sort not in SORT_KEYS:
            raise QueryError(f"sort {sort!r}: expected one of {', '.join(SORT_KEYS)}")
        order = params.get("order", "desc") or "desc"
        if order not in ("asc", "desc"):
            raise QueryError(f"order {order!r}: expected asc or desc")
        page = _number(params, "page", 1, 1, 1_000_000)
        per_page = _number(params, "per_page", PER_PAGE, 1, MAX_PER_PAGE)
        query = cls(**values, sort=sort, order=order, page=page, per_page=per_page)
        query.bounds()  # a bad time is refused before anything is read
        return query

    def bounds(self, now: datetime.datetime | None = None) -> tuple[
            datetime.datetime | None, datetime.datetime | None]:
        """The time range, parsed (QueryError naming the field when malformed)."""
        try:
            since = parse_when(self.since, "since", now) if self.since else None
            until = parse_when(self.until, "until", now) if self.until else None
        except UsageError as error:
            raise QueryError(error.message) from None
        return since, until

    def keeps(self, recording: Recording, names: Mapping[str, str],
              since: datetime.datetime | None = None,
              until: datetime.datetime | None = None) -> bool:
        """Whether the recording passes every filter given (`since` and `until`: the time
        range, as `bounds` parsed it)."""
        header = recording.header
        checks = (
            (self.server, (recording.node, names.get(recording.node, ""))),
            (self.ssh_user, (header.ssh_user, header.local_user)),
            (self.source_user, (header.src_node_user, *header.src_node_tags)),
            (self.source_node, (header.src_node, header.src_node_id)),
            (self.command, (header.command,)),
        )
        for wanted, values in checks:
            if wanted and not _contains(values, wanted):
                return False
        started = recording.header.timestamp  # one with no start passes no time bound
        if since is not None and (started is None or started < since.timestamp()):
            return False
        return until is None or (started is not None and started < until.timestamp())

    def select(self, recordings: Sequence[Recording], names: Mapping[str, str],
               orders: dict[tuple[str, str], list[Recording]] | None = None,
               ) -> tuple[list[Recording], int]:
        """This page's recordings, and how many pass the filters in all. `orders` keeps the
        unfiltered list sorted by each sort and order asked (for one snapshot), so a page
        without filters costs a slice."""
        if not self.filtered:
            order = (self.sort, self.order)
            kept = None if orders is None else orders.get(order)
            if kept is None:
                kept = sorted(recordings, key=SORT_KEYS[self.sort], reverse=self.order == "desc")
                if orders is not None:
                    orders[order] = kept
        else:
            since, until = self.bounds()
            kept = [r for r in recordings if self.keeps(r, names, since, until)]
            kept.sort(key=SORT_KEYS[self.sort], reverse=self.order == "desc")
        start = (self.page - 1) * self.per_page
        return kept[start:start + self.per_page], len(kept)

    def params(self, **changes: object) -> dict[str, str]:
        """The query string's parameters for this query with some changed (defaults left
        out), for links to other pages and orders."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        defaults = Query()
        return {name: str(value) for name, value in values.items()
                if value != getattr(defaults, name)}

    @property
    def filtered(self) -> bool:
        """Whether any filter is given."""
        return any(getattr(self, name) for name in TEXT_FIELDS)


def _contains(values: Sequence[str], wanted: str) -> bool:
    folded = wanted.casefold()
    return any(folded in value.casefold() for value in values if value)


def _number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} {text!r}: expected a whole number") from None
    if not low <= value <= high:
        raise QueryError(f"{name} {value}: expected {low} to {high}")
    return value
