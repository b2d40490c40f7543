"""Read an inventory file into typed objects, or report every problem with file:line and field."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode
from ruamel.yaml.scalarbool import ScalarBoolean

from tsops.errors import InventoryError
from tsops.inventory.model import Connection, Host, Inventory, OpenSSH, SshRule, Via

Loc = tuple[str | int, ...]
KEEP = OpenSSH()
MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
SECRET_LIKE = re.compile(r"tskey-(api|auth|client)-[A-Za-z0-9]+|AKIA[0-9A-Z]{16}")


@dataclass(frozen=True)
class Target:
    """One host tsops acts on, with every inherited setting resolved."""

    name: str
    role: Literal["server", "recorder"]
    group: str | None
    address: str
    tags: tuple[str, ...]
    user: str
    port: int
    identity_file: str | None
    sudo: bool
    jump_host: str | None
    line: int
    # How tsops reaches the host: "openssh", "tailnet" (Tailscale SSH to its tailnet address)
    # or "tailnet-once-enrolled" (Tailscale SSH when the device list shows it online).
    via: Via = "openssh"
    tailnet_identity: str | None = None  # who the control machine is on the tailnet
    openssh: OpenSSH = KEEP


@dataclass(frozen=True)
class LoadedInventory:
    """A valid inventory: the model, the flat list of hosts, and warnings worth reading."""

    path: Path
    model: Inventory
    targets: tuple[Target, ...]
    warnings: tuple[str, ...]

    def local_path(self, value: str) -> Path:
        """A path written in the inventory: `~` expanded, relative to the inventory's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    @property
    def servers(self) -> tuple[Target, ...]:
        """The hosts whose sessions are recorded."""
        return tuple(t for t in self.targets if t.role == "server")

    @property
    def recorders(self) -> tuple[Target, ...]:
        """The hosts that run tsrecorder."""
        return tuple(t for t in self.targets if t.role == "recorder")


STDIN = Path("<stdin>")


def load_inventory(path: Path, data: bytes | None = None) -> LoadedInventory:
    """Load and validate `path` (or `data` read elsewhere, named `path` in every message);
    raise InventoryError listing every problem found."""
    text = _read_text(path) if data is None else _decode(path, data)
    try:
        yaml = YAML(typ="rt")
        yaml.Composer = _GuardedComposer
        document = yaml.load(text)
    except _Refused as error:
        where = f"{path}:{error.line + 1}:{error.column + 1}"
        raise InventoryError([f"{where}: {error.message}"]) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InventoryError([f"{where}: invalid YAML: {error.problem or error}"]) from error
    if not isinstance(document, CommentedMap):
        raise InventoryError([f"{path}:1:1: (top level): the inventory must be a mapping of "
                              "sections (version, tailnet, servers, ...)"])
    secrets = list(_inline_secrets(path, document))
    if secrets:
        raise InventoryError(secrets)
    try:
        model = Inventory.model_validate(_plain(document))
    except ValidationError as error:
        errors = error.errors(include_url=False)
        problems = [_describe(path, document, e) for e in errors if not _follows(e, errors)]
        raise InventoryError(sorted(problems, key=_line_of)) from error
    targets = tuple(_with_local_paths(t, path.parent) for t in _targets(model, document))
    problems = list(_cross_check(path, document, model, targets))
    if problems:
        raise InventoryError(problems)
    return LoadedInventory(path, model, targets,
                           tuple(_warnings(path, text, document, model, targets)))


def _read_text(path: Path) -> str:
    """The file's text: at most MAX_BYTES of UTF-8, else an error naming where it goes wrong."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise InventoryError([f"{path}: cannot read the inventory: {error}"]) from error
    return _decode(path, data)


def _decode(path: Path, data: bytes) -> str:
    """At most MAX_BYTES of UTF-8 text, else an error naming where it goes wrong."""
    if len(data) > MAX_BYTES:
        line = data.count(b"\n", 0, MAX_BYTES) + 1
        raise InventoryError([
            f"{path}:{line}: the inventory is larger than {MAX_BYTES // 1024} KiB (the limit "
            "tsops reads; see docs/inventory.md): is this the right file?"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InventoryError([
            f"{path}:{line}:{column}: the inventory is not UTF-8 text (byte "
            f"0x{data[error.start]:02x})"]) from None


class _Refused(Exception):
    """YAML that is valid but that an inventory never needs (anchors, tags, deep nesting)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class _GuardedComposer(Composer):
    """ruamel's composer, refusing aliases, anchors, tags, merge keys and deep nesting.

    Each check happens on the event stream before the node is built, so that an alias bomb is
    never expanded and a deeply nested file never reaches the composer's recursion.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self.open_collections = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            raise _Refused(f"YAML alias *{event.anchor}: aliases and anchors are not allowed in "
                           "an inventory; write the value out", mark.line, mark.column)
        if event.anchor is not None:
            raise _Refused(f"YAML anchor &{event.anchor}: aliases and anchors are not allowed "
                           "in an inventory; write the value out", mark.line, mark.column)
        if event.tag is not None:
            tag = str(event.tag).replace("tag:yaml.org,2002:", "!!")
            raise _Refused(f"YAML tag {tag}: tags are not allowed in an inventory (quote "
                           "a value to make it a string)", mark.line, mark.column)
        if (isinstance(parent, MappingNode) and index is None and isinstance(event, ScalarEvent)
                and event.value == "<<" and event.style is None):
            raise _Refused("YAML merge key <<: merge keys are not allowed in an inventory; "
                           "write the fields out", mark.line, mark.column)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        if self.open_collections >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep; an inventory needs far "
                           "fewer (see docs/inventory.md)", mark.line, mark.column)
        self.open_collections += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.open_collections -= 1


def _follows(error: Any, errors: list[Any]) -> bool:
    """Whether an error only repeats another (a list too short because an item failed)."""
    if error["type"] != "too_short":
        return False
    loc = tuple(error["loc"])
    return any(tuple(other["loc"])[: len(loc)] == loc and len(other["loc"]) > len(loc)
               for other in errors)


def _line_of(problem: str) -> tuple[int, int]:
    """Sort key: the line and column a problem names."""
    match = re.match(r"^.*?:(\d+)(?::(\d+))?: ", problem)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def _plain(node: Any) -> Any:
    """Turn ruamel's round-trip nodes into dicts, tuples and plain scalars for validation."""
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return tuple(_plain(v) for v in node)
    if isinstance(node, ScalarBoolean):
        return bool(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _position(document: CommentedMap, loc: Loc, *, key: bool = False) -> tuple[int, int]:
    """Return (line, column), 1-based, of the value (or key) at `loc`, or its nearest parent."""
    node: Any = document
    line, column = 1, 1
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            row, col = node.lc.key(part) if key and last else node.lc.value(part)
            line, column = row + 1, col + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            row, col = node.lc.item(part)
            line, column = row + 1, col + 1
            node = node[part]
        else:
            break
    return line, column


def _field_path(loc: Loc) -> str:
    """`servers.hosts.web1.tags[0]`; a key holding control characters is shown quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if part.isprintable() else repr(part)
        out += f".{name}" if out else name
    return out or "(top level)"


def _describe(path: Path, document: CommentedMap, error: Any) -> str:
    """One line for one validation error: file:line:col: field: what was expected."""
    loc: Loc = tuple(p for p in error["loc"] if not _is_union_tag(p))
    kind = error["type"]
    if "[key]" in error["loc"]:  # a mapping key failed validation: point at the key
        line, col = _position(document, loc, key=True)
        return f"{path}:{line}:{col}: {_field_path(loc)}: {_message(error)}"
    if kind == "extra_forbidden":
        line, col = _position(document, loc, key=True)
        name = str(loc[-1])
        message = f"unknown field {name!r}"
        close = difflib.get_close_matches(name, _known_fields(loc[:-1]), n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return f"{path}:{line}:{col}: {_field_path(loc[:-1])}: {message}"
    line, col = _position(document, loc)
    if kind == "missing":
        return f"{path}:{line}:{col}: {_field_path(loc)}: required field is missing"
    return f"{path}:{line}:{col}: {_field_path(loc)}: {_message(error)}"


def _is_union_tag(part: str | int) -> bool:
    """pydantic adds the member type's name to locations inside unions; hide it."""
    return isinstance(part, str) and (part in {"SecretRef", "Host", "none"} or "[" in part)


def _message(error: Any) -> str:
    kind, got = error["type"], error.get("input")
    expected = {
        "string_type": "a string",
        "int_type": "a whole number",
        "bool_type": "true or false",
        "tuple_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
    }.get(kind)
    if expected == "a string" and isinstance(got, int | float) and not isinstance(got, bool):
        return f"expected a string, got the number {got!r} (put the value in quotes)"
    if expected:
        return f"expected {expected}, got {_shown(got)}"
    if kind in ("less_than_equal", "greater_than_equal"):
        bound = "at most" if kind == "less_than_equal" else "at least"
        limit = error["ctx"]["le" if kind == "less_than_equal" else "ge"]
        return f"expected {bound} {limit}, got {_shown(got)}"
    if kind == "too_short":
        return (f"expected at least {error['ctx']['min_length']} item(s), "
                f"got {error['ctx']['actual_length']}")
    if kind == "literal_error":
        return f"expected {error['ctx']['expected']}, got {_shown(got)}"
    message: str = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, tuple | list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


def _known_fields(loc: Loc) -> list[str]:
    """Return the field names a mapping at `loc` accepts, for 'did you mean' suggestions."""
    candidates: list[Any] = [Inventory]
    for part in loc:
        following: list[Any] = []
        for candidate in candidates:
            for member in _members(candidate):
                if isinstance(member, type) and issubclass(member, BaseModel):
                    field = member.model_fields.get(str(part))
                    if field is not None:
                        following.append(field.annotation)
                elif typing.get_origin(member) is dict:
                    following.append(typing.get_args(member)[1])
                elif typing.get_origin(member) is tuple:
                    following.append(typing.get_args(member)[0])
        candidates = following
    names: list[str] = []
    for candidate in candidates:
        for member in _members(candidate):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names.extend(member.model_fields)
    return names


def _members(annotation: Any) -> list[Any]:
    """Unwrap Annotated and unions into the plain types they allow."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _inline_secrets(path: Path, node: Any, loc: Loc = ()) -> Iterator[str]:
    """Find values that look like Tailscale or AWS secrets written into the file."""
    items: Any = (
        node.items() if isinstance(node, CommentedMap)
        else enumerate(node) if isinstance(node, CommentedSeq) else ()
    )
    for key, value in items:
        if isinstance(value, str) and SECRET_LIKE.search(value):
            row, col = node.lc.value(key) if isinstance(node, CommentedMap) else node.lc.item(key)
            yield (
                f"{path}:{row + 1}:{col + 1}: {_field_path((*loc, key))}: this looks like a secret "
                "written into the inventory; remove it (and rotate it), then name where it is "
                "kept, e.g. {env: TS_API_KEY} or {keyring: tsops/api-token}"
            )
        else:
            yield from _inline_secrets(path, value, (*loc, key))


def _targets(model: Inventory, document: CommentedMap) -> Iterator[Target]:
    servers = model.servers
    for name, host in servers.hosts.items():
        yield _target(name, "server", None, host, (model.connection, servers), servers.tags,
                      _position(document, ("servers", "hosts", name), key=True)[0])
    for group_name, group in servers.groups.items():
        for name, host in group.hosts.items():
            line = _position(document, ("servers", "groups", group_name, "hosts", name), key=True)
            yield _target(name, "server", group_name, host,
                          (model.connection, servers, group), (*servers.tags, *group.tags), line[0])
    if model.recorders is not None:
        recorders = model.recorders
        for name, host in recorders.hosts.items():
            yield _target(name, "recorder", None, host, (model.connection, recorders),
                          (recorders.tag,),
                          _position(document, ("recorders", "hosts", name), key=True)[0])


def _target(
    name: str,
    role: Literal["server", "recorder"],
    group: str | None,
    host: Host | None,
    layers: tuple[Connection, ...],
    inherited_tags: tuple[str, ...],
    line: int,
) -> Target:
    """Resolve one host: later layers (defaults, section, group, host) override earlier ones."""
    host = host or Host()
    chain = (*layers, host)

    def pick(field: str) -> Any:
        for layer in reversed(chain):
            value = getattr(layer, field, None)
            if value is not None:
                return value
        return None

    tags = tuple(dict.fromkeys((*inherited_tags, *host.tags)))
    # Recorders are always managed over OpenSSH (`connection.via` is for servers): under
    # enforceRecorder tsops's own Tailscale SSH sessions need a recorder, so managing the
    # recorders through one would lock tsops out the day they fail. _cross_check refuses a
    # `via` written on the recorders.
    via: Via = "openssh" if role == "recorder" else (pick("via") or "openssh")
    return Target(
        name=name, role=role, group=group, address=host.address or name, tags=tags,
        user=pick("user") or "root", port=pick("port") or 22,
        identity_file=pick("identity_file"), sudo=bool(pick("sudo")),
        jump_host=pick("jump_host"), line=line, via=via,
        tailnet_identity=getattr(layers[0], "tailnet_identity", None),
        openssh=(pick("openssh") if role == "server" else None) or KEEP,
    )


def _cross_check(
    path: Path, document: CommentedMap, model: Inventory, targets: tuple[Target, ...]
) -> Iterator[str]:
    """Problems that involve more than one field."""
    seen: dict[str, Target] = {}
    for target in targets:
        if target.name in seen:
            first = seen[target.name]
            section = ("recorders" if target.role == "recorder" else
                       f"servers.groups.{target.group}" if target.group else "servers")
            line, col = _position(document, _host_loc(target), key=True)
            yield (f"{path}:{line}:{col}: {section}.hosts.{target.name}: host "
                   f"{target.name!r} is listed twice (first at line {first.line})")
        seen.setdefault(target.name, target)
    tailnet = model.tailnet
    if tailnet.api_url.startswith("http://") and not tailnet.allow_plain_http:
        line, col = _position(document, ("tailnet", "api_url"))
        yield (f"{path}:{line}:{col}: tailnet.api_url: plain http:// sends the API token "
               "unencrypted; use https://, or set tailnet.allow_plain_http: true for a lab "
               "control server (see docs/inventory.md)")
    rule_names: set[str] = set()
    for index, rule in enumerate(model.ssh_rules):
        line, col = _position(document, ("ssh_rules", index, "name"))
        if rule.name in rule_names:
            yield f"{path}:{line}:{col}: ssh_rules[{index}].name: {rule.name!r} is used twice"
        rule_names.add(rule.name)
        if rule.check_period is not None and rule.action != "check":
            line, col = _position(document, ("ssh_rules", index, "check_period"))
            yield (f"{path}:{line}:{col}: ssh_rules[{index}].check_period: a check period is "
                   f"only allowed on a rule with action: check (this rule is {rule.action}); "
                   "remove it or set action: check")
        if rule.enforce_recorder and model.recorders is None:
            line, col = _position(document, ("ssh_rules", index))
            yield (f"{path}:{line}:{col}: ssh_rules[{index}]: enforce_recorder is true but the "
                   "inventory has no `recorders`; every session would be refused (lockout)")
    yield from _canary_checks(path, document, model, targets)
    if model.recorders is not None and model.storage is None:
        line, col = _position(document, ("recorders",), key=True)
        yield f"{path}:{line}:{col}: recorders: recorders need a `storage` section"
    yield from _recorder_checks(path, document, model)
    yield from _openssh_checks(path, document, model)
    yield from _openssh_off_checks(path, document, model, targets)
    yield from _via_checks(path, document, model, targets)


def _via_checks(path: Path, document: CommentedMap, model: Inventory,
                targets: tuple[Target, ...]) -> Iterator[str]:
    """`via` on recorders, and a tailnet `via` without an identity an accept rule admits."""
    recorders = model.recorders
    if recorders is not None:
        written: list[tuple[Loc, Connection]] = [(("recorders",), recorders)] + [
            (("recorders", "hosts", name), host) for name, host in recorders.hosts.items()
            if host is not None]
        for loc, layer in written:
            if layer.via not in (None, "openssh"):
                line, col = _position(document, (*loc, "via"))
                yield (f"{path}:{line}:{col}: {_field_path((*loc, 'via'))}: recorders are "
                       "always managed over OpenSSH (they are not tailnet nodes tsops enrolls, "
                       "and under enforceRecorder tsops's own Tailscale SSH sessions need them); "
                       "remove it")
    identity = model.connection.tailnet_identity
    reported: set[Loc] = set()
    for target in targets:
        if target.via == "openssh":
            continue
        via_loc = _via_loc(model, target)
        if identity is None:
            if via_loc not in reported:
                reported.add(via_loc)
                line, col = _position(document, via_loc)
                yield (f"{path}:{line}:{col}: {_field_path(via_loc)}: via {target.via} needs "
                       "connection.tailnet_identity: the user login or tag the control machine "
                       "has on the tailnet (see docs/tailnet-management.md)")
            continue
        problem = identity_problem(model.ssh_rules, identity, target)
        if problem is not None:
            line, col = _position(document, ("connection", "tailnet_identity"))
            yield f"{path}:{line}:{col}: connection.tailnet_identity: {problem}"


def identity_problem(rules: tuple[SshRule, ...], identity: str, target: Target) -> str | None:
    """Why no managed rule lets `identity` into `target` as its connection user, or None.

    The first managed rule whose src, dst and users match decides, as in Tailscale SSH. Only
    what the inventory knows is proven: a `group:` in src is defined in the policy file, so an
    identity admitted only through one is not taken as admitted.
    """
    for rule in rules:
        if not (_src_admits(rule.src, identity) and set(rule.dst) & set(target.tags)
                and _users_admit(rule, identity, target.user)):
            continue
        if rule.action != "accept":
            return (f"{target.name}: the first managed ssh rule admitting {identity} as "
                    f"{target.user} is {rule.name!r} with action {rule.action}: a check rule "
                    "asks for a browser login, which tsops cannot do; give tsops an accept "
                    "rule listed before it (see docs/tailnet-management.md)")
        return None
    return (f"{target.name}: no ssh_rules entry admits {identity} to its tags "
            f"({', '.join(target.tags)}) as {target.user} with action: accept, so Tailscale "
            "SSH would refuse tsops (see docs/tailnet-management.md for the rule to add)")


def _src_admits(src: tuple[str, ...], identity: str) -> bool:
    tagged = identity.startswith("tag:")
    return identity in src or ("autogroup:tagged" if tagged else "autogroup:member") in src


def _users_admit(rule: SshRule, identity: str, user: str) -> bool:
    if rule.admits(user):
        return True
    local, _, domain = identity.partition("@")
    return (not identity.startswith("tag:") and local == user
            and f"localpart:*@{domain}" in rule.users)


def _via_loc(model: Inventory, target: Target) -> Loc:
    """Where the `via` that applies to a server is written (host, group, servers, connection)."""
    servers = model.servers
    layers: list[tuple[Loc, Connection | None]] = [
        (("connection",), model.connection), (("servers",), servers)]
    if target.group is not None:
        group = servers.groups[target.group]
        layers += [(("servers", "groups", target.group), group),
                   (("servers", "groups", target.group, "hosts", target.name),
                    group.hosts.get(target.name))]
    else:
        layers.append((("servers", "hosts", target.name), servers.hosts.get(target.name)))
    for loc, layer in reversed(layers):
        if layer is not None and layer.via is not None:
            return (*loc, "via")
    return ("connection", "via")


def _openssh_layers(model: Inventory) -> Iterator[tuple[Loc, OpenSSH | None]]:
    """Every place an `openssh` setting can be written, with what it holds."""
    servers = model.servers
    yield ("servers",), servers.openssh
    for name, host in servers.hosts.items():
        yield ("servers", "hosts", name), host.openssh if host else None
    for group_name, group in servers.groups.items():
        yield ("servers", "groups", group_name), group.openssh
        for name, host in group.hosts.items():
            yield ("servers", "groups", group_name, "hosts", name), host.openssh if host else None
    if model.recorders is not None:
        yield ("recorders",), model.recorders.openssh
        for name, host in model.recorders.hosts.items():
            yield ("recorders", "hosts", name), host.openssh if host else None


def _openssh_checks(path: Path, document: CommentedMap, model: Inventory) -> Iterator[str]:
    """`openssh` settings that contradict themselves, or sit on a recorder."""
    for loc, openssh in _openssh_layers(model):
        if openssh is None:
            continue
        here: Loc = (*loc, "openssh")

        def at(*field: str | int, _here: Loc = here) -> str:
            line, col = _position(document, (*_here, *field))
            return f"{path}:{line}:{col}: {_field_path((*_here, *field))}"

        if loc[0] == "recorders":
            line, col = _position(document, here, key=True)
            yield (f"{path}:{line}:{col}: {_field_path(here)}: `openssh` is only for servers: "
                   "tsops does not enroll recorder hosts in the tailnet, so OpenSSH stays the way "
                   "to manage them; remove it")
        elif openssh.mode == "restrict" and not openssh.listen:
            yield (f"{at('listen')}: mode restrict needs `listen`: the addresses sshd keeps "
                   "listening on (a management address, or 127.0.0.1)")
        elif openssh.mode != "restrict" and openssh.listen:
            yield (f"{at('listen')}: `listen` is only used with mode restrict (this is mode "
                   f"{openssh.mode}); remove it or set mode: restrict")
        else:
            seen: set[str] = set()
            for index, address in enumerate(openssh.listen):
                if address in seen:
                    yield f"{at('listen', index)}: {address} is listed twice"
                seen.add(address)


def _openssh_off_checks(path: Path, document: CommentedMap, model: Inventory,
                        targets: tuple[Target, ...]) -> Iterator[str]:
    """`off` on a server tsops manages over OpenSSH: the change would cut tsops off for good
    (the dead-man would revert it on every run), so it needs a tailnet `via`."""
    reported: set[Loc] = set()
    for target in targets:
        if target.role != "server" or target.openssh.mode != "off" or target.via != "openssh":
            continue
        loc = _openssh_loc(model, target)
        if loc in reported:
            continue
        reported.add(loc)
        line, col = _position(document, (*loc, "mode"))
        yield (f"{path}:{line}:{col}: {_field_path((*loc, 'mode'))}: mode off on {target.name}, "
               "which tsops manages over OpenSSH (via openssh): turning sshd off would cut tsops "
               "off; set via: tailnet-once-enrolled (or tailnet) and tailnet_identity first "
               "(see docs/tailnet-management.md)")


def _openssh_loc(model: Inventory, target: Target) -> Loc:
    """Where the `openssh` setting that applies to a server is written."""
    servers = model.servers
    layers: list[tuple[Loc, OpenSSH | None]] = [(("servers",), servers.openssh)]
    if target.group is not None:
        group = servers.groups[target.group]
        host = group.hosts.get(target.name)
        layers += [(("servers", "groups", target.group), group.openssh),
                   (("servers", "groups", target.group, "hosts", target.name),
                    host.openssh if host else None)]
    else:
        host = servers.hosts.get(target.name)
        layers.append((("servers", "hosts", target.name), host.openssh if host else None))
    for loc, layer in reversed(layers):
        if layer is not None:
            return (*loc, "openssh")
    return ("servers", "openssh")


def _canary_checks(path: Path, document: CommentedMap, model: Inventory,
                   targets: tuple[Target, ...]) -> Iterator[str]:
    """The canary account must be one that a managed `accept` rule lets in on every server."""
    if model.canary is None:
        return
    user = model.canary.user
    line, col = _position(document, ("canary", "user"))
    uncovered = []
    for target in targets:
        if target.role != "server":
            continue
        if not any(rule.action == "accept" and rule.admits(user)
                   and set(rule.dst) & set(target.tags) for rule in model.ssh_rules):
            uncovered.append(target.name)
    if uncovered:
        yield (f"{path}:{line}:{col}: canary.user: no ssh_rules rule with action: accept lets "
               f"{user!r} in on {', '.join(uncovered)}; add one whose dst names their tags and "
               f"whose users list {user!r} (see docs/verify.md, \"A verifier identity\")")


AWS_ENDPOINT_REGION = re.compile(r"^s3[.-](?:dualstack\.|fips\.)?([a-z]{2}(?:-[a-z]+)+-[0-9]+)"
                                 r"\.amazonaws\.com(?:\.cn)?$")


def endpoint_region(endpoint: str) -> str | None:
    """The AWS region an endpoint URL names (s3.REGION.amazonaws.com), or None."""
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    match = AWS_ENDPOINT_REGION.match(host)
    return match.group(1) if match else None


def _recorder_checks(path: Path, document: CommentedMap, model: Inventory) -> Iterator[str]:
    """Storage and recorder settings that only make sense together."""
    storage, recorders = model.storage, model.recorders

    def at(*loc: str | int) -> str:
        line, col = _position(document, loc)
        return f"{path}:{line}:{col}: {_field_path(loc)}"

    if recorders is not None and recorders.binary is not None and recorders.runtime != "binary":
        yield f"{at('recorders', 'binary')}: `binary` is only used with runtime `binary`"
    if storage is None:
        return
    lock = storage.object_lock
    if lock.mode == "off" and lock.retention_days is not None:
        yield (f"{at('storage', 'object_lock', 'retention_days')}: retention days need Object "
               "Lock: set object_lock.mode to compliance or governance, or remove them")
    if lock.mode != "off" and lock.retention_days is None:
        yield (f"{at('storage', 'object_lock', 'mode')}: Object Lock {lock.mode} needs "
               "`retention_days`")
    if storage.encryption == "sse-kms" and storage.kms_key is None:
        yield f"{at('storage', 'encryption')}: sse-kms needs `kms_key`"
    if storage.encryption != "sse-kms" and storage.kms_key is not None:
        yield f"{at('storage', 'kms_key')}: a KMS key is only used with encryption sse-kms"
    if not storage.is_s3:
        return
    if storage.region is None and storage.endpoint is None:
        yield (f"{at('storage', 'destination')}: an S3 destination needs `region` (AWS) "
               "or `endpoint` (S3-compatible store)")
    if storage.endpoint is not None:
        named = endpoint_region(storage.endpoint)
        if named is not None and storage.region is not None and named != storage.region:
            yield (f"{at('storage', 'region')}: region {storage.region!r} disagrees with the "
                   f"endpoint {storage.endpoint}, which is in {named}")
        if storage.endpoint.startswith("http://") and not storage.allow_plain_http:
            yield (f"{at('storage', 'endpoint')}: plain http:// sends recordings and keys "
                   "unencrypted, and the bucket policy denies non-TLS access; use https://, or "
                   "set allow_plain_http: true for a lab store (see docs/recorder.md)")


def _with_local_paths(target: Target, base: Path) -> Target:
    """Resolve a host's identity file like every other local path in the inventory."""
    if target.identity_file is None:
        return target
    path = Path(target.identity_file).expanduser()
    return replace(target, identity_file=str(path if path.is_absolute() else base / path))


def _host_loc(target: Target) -> Loc:
    """Where a host is defined in the document."""
    if target.role == "recorder":
        return ("recorders", "hosts", target.name)
    if target.group:
        return ("servers", "groups", target.group, "hosts", target.name)
    return ("servers", "hosts", target.name)


def _keyring_refs(node: Any, loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Every `keyring:` value of a secret reference, with where it is."""
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            if key == "keyring" and isinstance(value, str):
                yield (*loc, key), value
            else:
                yield from _keyring_refs(value, (*loc, key))
    elif isinstance(node, CommentedSeq):
        for index, value in enumerate(node):
            yield from _keyring_refs(value, (*loc, index))


def _offline_warnings(path: Path, text: str, document: CommentedMap, model: Inventory,
                      targets: tuple[Target, ...]) -> Iterator[str]:
    """What `check` can see without contacting anything that will fail or hurt later."""
    from tsops.secrets import ENTRY_RE

    # Values that look like keys are refused before this; one left here is in a comment.
    for number, content in enumerate(text.splitlines(), 1):
        found = SECRET_LIKE.search(content)
        if found:
            yield (f"{path}:{number}:{found.start() + 1}: a Tailscale or AWS key is written in "
                   "this file (in a comment): delete it, from the file's history too, and "
                   "revoke it")
    for loc, entry in _keyring_refs(document):
        if not ENTRY_RE.match(entry):
            line, col = _position(document, loc)
            yield (f"{path}:{line}:{col}: {_field_path(loc)}: keyring entry {entry!r} is not "
                   "SERVICE/NAME (letters, digits, '.', '_', '@', '-'), so `tsops secrets set` "
                   "cannot store it; name it like tsops/api-token")
    seen: set[str] = set()
    for target in targets:
        if target.identity_file is None or target.identity_file in seen:
            continue
        seen.add(target.identity_file)
        key = Path(target.identity_file)
        where = f"{path}:{target.line}: {target.name}: identity file {key}"
        if not key.exists():
            yield f"{where} does not exist: the SSH connection will fail"
        elif key.stat().st_mode & 0o077:
            yield (f"{where} is readable by others (mode {key.stat().st_mode & 0o777:o}): "
                   f"OpenSSH refuses such a key; chmod 600 {key}")
    if model.recorders is not None:
        recorders = [t for t in targets if t.role == "recorder"]
        enforced = [rule.name for rule in model.ssh_rules if rule.enforce_recorder
                    and (rule.recorder or model.recorders.tag) == model.recorders.tag]
        if len(recorders) == 1 and enforced:
            only = recorders[0]
            yield (f"{path}:{only.line}: {only.name} is the only recorder and rule(s) "
                   f"{', '.join(enforced)} enforce recording: while it is down, every session "
                   "they cover is refused (a single point of lockout); add a second recorder host")


def _warnings(path: Path, text: str, document: CommentedMap, model: Inventory,
              targets: tuple[Target, ...]) -> Iterator[str]:
    """Findings that are legal but probably not what the operator meant."""
    yield from _offline_warnings(path, text, document, model, targets)
    server_tags = {tag for t in targets if t.role == "server" for tag in t.tags}
    for index, rule in enumerate(model.ssh_rules):
        for position, tag in enumerate(rule.dst):
            if tag not in server_tags:
                line, col = _position(document, ("ssh_rules", index, "dst", position))
                yield (f"{path}:{line}:{col}: ssh_rules[{index}].dst[{position}]: no server in "
                       f"this inventory carries {tag}")
    if not any(t.role == "server" for t in targets):
        yield f"{path}:1: the inventory lists no servers"
