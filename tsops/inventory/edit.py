"""Add or remove a server in an inventory's text, leaving every other byte as it was.

ruamel.yaml's round-trip parser finds where things are (lines and columns); the edit itself is
done on the lines of the text, so comments, key order, quoting and blank lines elsewhere can
never be rewritten by a dump.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tsops.errors import UsageError

PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./@][A-Za-z0-9_./@:-]*$")


@dataclass(frozen=True)
class NewHost:
    """The fields a new server is written with (None: inherited, not written)."""

    name: str
    group: str | None = None
    tags: tuple[str, ...] = ()
    user: str | None = None
    port: int | None = None
    address: str | None = None


@dataclass(frozen=True)
class Edit:
    """The edited text, and the 0-based line range [first, last) the edit wrote or removed."""

    text: str
    first: int
    last: int


def add_host(text: str, host: NewHost) -> Edit:
    """Insert `host` after the last host of its section (or group), in the file's own style."""
    document = _parse(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if host.name in host_names(document):
        raise UsageError(f"{host.name!r} is already in the inventory; nothing was changed")
    servers = document.get("servers")
    if not isinstance(servers, CommentedMap):
        raise UsageError("the inventory has no `servers` section to add the host to")
    parent: CommentedMap = servers
    where = "servers"
    if host.group is not None:
        groups = servers.get("groups")
        group = groups.get(host.group) if isinstance(groups, CommentedMap) else None
        if not isinstance(group, CommentedMap):
            raise UsageError(f"--group {host.group}: the inventory has no server group "
                             f"{host.group!r} (servers.groups); create it by hand first")
        parent, where = group, f"servers.groups.{host.group}"
    indent_step = _indent_step(document)
    hosts = parent.get("hosts")
    if "hosts" in parent and isinstance(hosts, CommentedMap) and hosts:
        if hosts.fa.flow_style():
            raise UsageError(f"{where}.hosts is written in flow style ({{...}}); "
                             "add the host by hand")
        last = list(hosts)[-1]
        row, column = hosts.lc.key(last)
        at = _block_end(lines, row, column)
        child = _child_indent(hosts, column, indent_step)
        new = _host_lines(host, column, child, _tags_flow(document), _seq_dash(document, child))
    elif "hosts" in parent and hosts is None:
        row, column = parent.lc.key("hosts")
        if lines[row].rstrip("\r\n").split("#", 1)[0].rstrip() != " " * column + "hosts:":
            raise UsageError(f"{where}.hosts: cannot tell where to add the host; add it by hand")
        at = row + 1
        key = column + indent_step
        new = _host_lines(host, key, key + indent_step, _tags_flow(document),
                          _seq_dash(document, key + indent_step))
    elif "hosts" not in parent:
        column = int(parent.lc.key(next(iter(parent)))[1])
        at = _mapping_end(lines, parent, column)
        key = column + indent_step
        new = [" " * column + "hosts:\n", *_host_lines(
            host, key, key + indent_step, _tags_flow(document),
            _seq_dash(document, key + indent_step))]
    else:
        raise UsageError(f"{where}.hosts is not a block mapping of hosts; add the host by hand")
    result = [*lines[:at], *new, *lines[at:]]
    return Edit("".join(result), at, at + len(new))


def remove_host(text: str, name: str) -> Edit:
    """Remove server `name`, its lines and its own comments; comments of others stay."""
    document = _parse(text)
    lines = text.splitlines(keepends=True)
    hosts, where = _find_server(document, name)
    if hosts.fa.flow_style():
        raise UsageError(f"{where}.hosts is written in flow style ({{...}}); "
                         "remove the host by hand")
    row, column = hosts.lc.key(name)
    end = _block_end(lines, row, column)
    first = row
    if len(hosts) == 1 and where == "servers":
        # `hosts:` with nothing under it would be null, which the loader refuses: drop the key.
        servers = document["servers"]
        hosts_row = servers.lc.key("hosts")[0]
        if lines[hosts_row].split("#", 1)[0].strip() == "hosts:" and hosts_row < row:
            first = hosts_row
    return Edit("".join([*lines[:first], *lines[end:]]), first, end)


def host_names(document: CommentedMap) -> set[str]:
    """Every host name the document lists, servers and recorders alike."""
    names: set[str] = set()
    sections: list[Any] = [document.get("servers"), document.get("recorders")]
    servers = document.get("servers")
    if isinstance(servers, CommentedMap) and isinstance(servers.get("groups"), CommentedMap):
        sections += list(servers["groups"].values())
    for section in sections:
        if isinstance(section, CommentedMap) and isinstance(section.get("hosts"), CommentedMap):
            names.update(str(k) for k in section["hosts"])
    return names


def _parse(text: str) -> CommentedMap:
    document = YAML(typ="rt").load(text)
    if not isinstance(document, CommentedMap):
        raise UsageError("the inventory is not a mapping")
    return document


def _find_server(document: CommentedMap, name: str) -> tuple[CommentedMap, str]:
    """The hosts mapping that holds server `name`, and where it is (for messages)."""
    servers = document.get("servers")
    if isinstance(servers, CommentedMap):
        hosts = servers.get("hosts")
        if isinstance(hosts, CommentedMap) and name in hosts:
            return hosts, "servers"
        groups = servers.get("groups")
        if isinstance(groups, CommentedMap):
            for group_name, group in groups.items():
                hosts = group.get("hosts") if isinstance(group, CommentedMap) else None
                if isinstance(hosts, CommentedMap) and name in hosts:
                    return hosts, f"servers.groups.{group_name}"
    raise UsageError(f"{name!r} is not a server of this inventory")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _block_end(lines: list[str], row: int, column: int) -> int:
    """The line after the block of the key at (row, column): its value and nested comments."""
    end = row + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and _indent(line) <= column:
            break
        end += 1
    while end > row + 1 and _is_blank_or_comment(lines[end - 1]):
        end -= 1  # trailing blank lines and comments belong to what follows
    return end


def _mapping_end(lines: list[str], mapping: CommentedMap, column: int) -> int:
    """The line after the last key of a block mapping whose keys sit at `column`."""
    last = list(mapping)[-1]
    row, _ = mapping.lc.key(last)
    return _block_end(lines, row, column)


def _indent_step(document: CommentedMap) -> int:
    """How far the file indents a nested mapping (2 unless the file shows otherwise)."""
    servers = document.get("servers")
    if isinstance(servers, CommentedMap) and servers and not servers.fa.flow_style():
        outer = document.lc.key("servers")[1]
        inner = servers.lc.key(next(iter(servers)))[1]
        if inner > outer:
            return int(inner - outer)
    return 2


def _child_indent(hosts: CommentedMap, column: int, step: int) -> int:
    """The column of a host's fields, as an existing host in block style has them."""
    for value in hosts.values():
        if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
            return int(value.lc.key(next(iter(value)))[1])
    return column + step


def _sequences(node: Any, key: str = "") -> list[tuple[str, CommentedSeq]]:
    found: list[tuple[str, CommentedSeq]] = []
    if isinstance(node, CommentedMap):
        for k, v in node.items():
            found += _sequences(v, str(k))
    elif isinstance(node, CommentedSeq):
        found.append((key, node))
        for v in node:
            found += _sequences(v)
    return found


def _tags_flow(document: CommentedMap) -> bool:
    """Whether the file writes `tags` lists in flow style ([a, b]); flow when it has none."""
    tags = [seq for key, seq in _sequences(document) if key == "tags"]
    return tags[0].fa.flow_style() if tags else True


def _seq_dash(document: CommentedMap, key_column: int) -> int:
    """How far a block list's dashes sit right of its key (0 or the file's own offset)."""
    for key, seq in _sequences(document):
        if seq and not seq.fa.flow_style() and key:
            return max(0, int(seq.lc.item(0)[1]) - 2 - _key_column_of(document, seq))
    return 0


def _key_column_of(document: CommentedMap, seq: CommentedSeq) -> int:
    """The column of the key that holds `seq`."""
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, CommentedMap):
            for k, v in node.items():
                if v is seq:
                    return int(node.lc.key(k)[1])
                stack.append(v)
        elif isinstance(node, CommentedSeq):
            stack.extend(node)
    return 0


def _scalar(value: str | int) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted (JSON is valid YAML)."""
    if isinstance(value, int):
        return str(value)
    if PLAIN_SCALAR.match(value) and value.lower() not in {"null", "true", "false", "yes", "no",
                                                          "on", "off", "~"}:
        return value
    return json.dumps(value)


def _host_lines(host: NewHost, key: int, child: int, flow: bool, dash: int) -> list[str]:
    """The lines of one host entry: `name:` alone, or `name:` and its fields."""
    fields: list[str] = []
    if host.address is not None:
        fields.append(f"{' ' * child}address: {_scalar(host.address)}\n")
    if host.user is not None:
        fields.append(f"{' ' * child}user: {_scalar(host.user)}\n")
    if host.port is not None:
        fields.append(f"{' ' * child}port: {host.port}\n")
    if host.tags and flow:
        fields.append(f"{' ' * child}tags: [{', '.join(_scalar(t) for t in host.tags)}]\n")
    elif host.tags:
        fields.append(f"{' ' * child}tags:\n")
        fields += [f"{' ' * (child + dash)}- {_scalar(t)}\n" for t in host.tags]
    return [f"{' ' * key}{_scalar(host.name)}:\n", *fields]


def set_storage(text: str, changes: dict[str, Any]) -> Edit:
    """Set (or, with None, remove) fields of the `storage` block; every other byte stays.

    A scalar that replaces a scalar keeps the line's own comment; a new field goes after the
    block's last field, indented like its siblings, nested mappings in block style.
    """
    document = _parse(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    storage = document.get("storage")
    if not isinstance(storage, CommentedMap) or not storage or storage.fa.flow_style():
        raise UsageError("storage: not a block mapping tsops can edit line by line; "
                         "edit the storage section by hand")
    column = int(storage.lc.key(next(iter(storage)))[1])
    step = column - int(document.lc.key("storage")[1]) or _indent_step(document)
    edits: list[tuple[int, int, list[str]]] = []
    appended: list[str] = []
    for key, value in changes.items():
        if key in storage:
            row = int(storage.lc.key(key)[0])
            end = _block_end(lines, row, column)
            if value is None:
                edits.append((row, end, []))
            elif not isinstance(value, dict) and end == row + 1 and not isinstance(
                    storage[key], CommentedMap | CommentedSeq):
                edits.append((row, end, [_replace_scalar(lines[row], value)]))
            else:
                edits.append((row, end, _field_lines(key, value, column, step)))
        elif value is not None:
            appended += _field_lines(key, value, column, step)
    if appended:
        end = _mapping_end(lines, storage, column)
        edits.append((end, end, appended))
    for first, last, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[first:last] = new
    rows = [e[0] for e in edits]
    return Edit("".join(lines), min(rows, default=0), max(rows, default=0))


def _replace_scalar(line: str, value: str | int | bool) -> str:
    """The line `key: old  # comment` with the new value, the comment kept."""
    match = re.match(r"^(\s*[^\s:#][^:#]*:[ \t]*)([^#\n]*?)([ \t]+#[^\n]*)?(\r?\n)?$", line)
    if match is None:
        raise UsageError(f"cannot edit the line {line.strip()!r} in place; edit it by hand")
    return f"{match.group(1)}{_value(value)}{match.group(3) or ''}{match.group(4) or ''}"


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _scalar(value)


def _field_lines(key: str, value: Any, column: int, step: int) -> list[str]:
    """`key: value`, or `key:` and its nested fields in block style."""
    if isinstance(value, dict):
        nested = [line for k, v in value.items() for line in
                  _field_lines(str(k), v, column + step, step)]
        return [f"{' ' * column}{key}:\n", *nested]
    return [f"{' ' * column}{key}: {_value(value)}\n"]
