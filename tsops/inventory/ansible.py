"""Read an Ansible inventory (INI or YAML) and write the servers section of a tsops inventory.

Ansible's model is wider than tsops's: a host may sit in many groups, groups nest, and variables
carry anything. What maps is mapped (`ansible_host`, `ansible_user`, `ansible_port`,
`ansible_ssh_private_key_file`, `ansible_become`, a ProxyJump in `ansible_ssh_common_args`),
each host goes to the first group that lists it, and everything else is reported by name, never
by value (a variable may hold a password). The reading is our own: Ansible itself is GPL and
large, and its inventory plugins need its whole runtime; the two formats are small and stable.
"""

from __future__ import annotations

import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from tsops.errors import InventoryError
from tsops.inventory.model import HOSTNAME_RE, address_problem

MAPPED = ("ansible_host", "ansible_ssh_host", "ansible_user", "ansible_ssh_user", "ansible_port",
          "ansible_ssh_port", "ansible_ssh_private_key_file", "ansible_private_key_file",
          "ansible_become", "ansible_ssh_common_args", "ansible_ssh_extra_args")
SECRETS = ("ansible_password", "ansible_ssh_pass", "ansible_become_password",
           "ansible_become_pass", "ansible_sudo_pass")
RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")
JUMP = re.compile(r"(?:-J\s*|ProxyJump[= ])(\S+)")
TRUE = ("true", "yes", "on", "1")


@dataclass
class AnsibleGroup:
    """One group: its hosts in file order (with the line that names each), vars, children."""

    name: str
    hosts: dict[str, int] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


@dataclass
class AnsibleInventory:
    """Groups by name (`all` and `ungrouped` included) and each host's own vars."""

    path: Path
    groups: dict[str, AnsibleGroup] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_lines: dict[str, int] = field(default_factory=dict)

    def group(self, name: str) -> AnsibleGroup:
        return self.groups.setdefault(name, AnsibleGroup(name))

    def add_host(self, group: str, name: str, line: int, variables: dict[str, Any]) -> None:
        self.group(group).hosts.setdefault(name, line)
        self.host_lines.setdefault(name, line)
        self.host_vars.setdefault(name, {}).update(variables)


def _bad(path: Path, line: int, message: str) -> InventoryError:
    return InventoryError([f"{path}:{line}: {message}"])


def expand(path: Path, line: int, pattern: str) -> list[str]:
    """Expand Ansible's host ranges: `web[01:03]` (leading zeros kept), `db-[a:c]`, strides."""
    found = RANGE.search(pattern)
    if found is None:
        if "[" in pattern or "]" in pattern:
            raise _bad(path, line, f"host pattern {pattern!r}: expected a range like [01:10] "
                       "or [a:f]")
        return [pattern]
    start, end, step = found[1], found[2], int(found[3] or 1)
    head, tail = pattern[:found.start()], pattern[found.end():]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(start), int(end) + 1, step)]
    elif len(start) == len(end) == 1 and start.isalpha() and end.isalpha():
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise _bad(path, line, f"host pattern {pattern!r}: a range is numbers or single letters")
    if not values:
        raise _bad(path, line, f"host pattern {pattern!r}: the range is empty")
    return [name for value in values for name in expand(path, line, head + value + tail)]


def _scalar(value: str) -> Any:
    """An INI value as Ansible reads it: a number, a boolean, or text."""
    if value.isdigit():
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _pairs(path: Path, line: int, words: list[str]) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise _bad(path, line, f"expected key=value, got {word!r}")
        variables[key] = _scalar(value)
    return variables


def parse_ini(path: Path, text: str) -> AnsibleInventory:
    """Read an INI inventory: `[group]`, `[group:vars]`, `[group:children]` and host lines."""
    inventory = AnsibleInventory(path)
    inventory.group("all")
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            header = re.fullmatch(r"\[([^\]:\s]+)(?::(\w+))?\]\s*(?:[#;].*)?", line)
            if header is None:
                raise _bad(path, number, f"bad section header {line!r}: expected [group], "
                           "[group:vars] or [group:children]")
            section, kind = header[1], header[2] or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise _bad(path, number, f"unknown section kind :{kind} (expected :vars or "
                           ":children)")
            inventory.group(section)
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as error:
            raise _bad(path, number, f"cannot read this line: {error}") from None
        if kind == "vars":
            inventory.group(section).vars.update(_pairs(path, number, words))
        elif kind == "children":
            if len(words) != 1:
                raise _bad(path, number, f"expected one group name, got {line!r}")
            inventory.group(section).children.append(words[0])
            inventory.group(words[0])
        else:
            variables = _pairs(path, number, words[1:])
            for name in expand(path, number, words[0]):
                inventory.add_host(section, name, number, variables)
    return inventory


def parse_yaml(path: Path, text: str) -> AnsibleInventory:
    """Read a YAML inventory: groups with `hosts`, `vars` and `children`, from `all` down."""
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise _bad(path, mark.line + 1 if mark else 1,
                   f"invalid YAML: {error.problem or error}") from None
    if not isinstance(document, CommentedMap):
        raise _bad(path, 1, "an Ansible YAML inventory is a mapping of groups (all: ...)")
    inventory = AnsibleInventory(path)
    inventory.group("all")

    def walk(name: str, body: Any, line: int) -> None:
        group = inventory.group(name)
        if body is None:
            return
        if not isinstance(body, CommentedMap):
            raise _bad(path, line, f"group {name}: expected hosts, vars or children")
        for key in body:
            if key not in ("hosts", "vars", "children"):
                raise _bad(path, body.lc.key(key)[0] + 1, f"group {name}: unknown key {key!r} "
                           "(expected hosts, vars or children)")
        for section in ("hosts", "children", "vars"):
            if body.get(section) is not None and not isinstance(body[section], CommentedMap):
                raise _bad(path, body.lc.key(section)[0] + 1,
                           f"group {name}: {section} must be a mapping")
        hosts = body.get("hosts") or CommentedMap()
        children = body.get("children") or CommentedMap()
        group.vars.update(dict(body.get("vars") or {}))
        for pattern, variables in hosts.items():
            row = hosts.lc.key(pattern)[0] + 1
            if variables is not None and not isinstance(variables, dict):
                raise _bad(path, row, f"host {pattern}: its variables must be a mapping")
            for host in expand(path, row, str(pattern)):
                inventory.add_host(name, host, row, dict(variables or {}))
        for child, child_body in children.items():
            group.children.append(str(child))
            walk(str(child), child_body, children.lc.key(child)[0] + 1)

    for name, body in document.items():
        walk(str(name), body, document.lc.key(name)[0] + 1)
    return inventory


def read(path: Path) -> AnsibleInventory:
    """Read `path` as YAML when it looks like YAML (by suffix or content), else as INI."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InventoryError([f"{path}: cannot read the Ansible inventory: {error}"]) from None
    first = next((line.strip() for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")), "")
    if path.suffix in (".yaml", ".yml") or first == "---" or re.match(r"^[\w.-]+:\s*$", first):
        return parse_yaml(path, text)
    return parse_ini(path, text)


@dataclass
class ImportedHost:
    """One server as tsops will know it."""

    name: str
    ansible_name: str
    group: str | None
    line: int
    settings: dict[str, Any]


@dataclass
class Imported:
    """The servers to write and what could not be mapped (by name only)."""

    hosts: list[ImportedHost]
    notes: list[str]


def _ancestors(inventory: AnsibleInventory) -> dict[str, list[str]]:
    """For each group, itself and the groups it sits in, nearest first (for variables)."""
    parents: dict[str, list[str]] = {}
    for group in inventory.groups.values():
        for child in group.children:
            parents.setdefault(child, []).append(group.name)
    order: dict[str, list[str]] = {}
    for name in inventory.groups:
        chain, queue = [name], list(parents.get(name, []))
        while queue:
            parent = queue.pop(0)
            if parent not in chain:
                chain.append(parent)
                queue.extend(parents.get(parent, []))
        if "all" not in chain:
            chain.append("all")
        order[name] = chain
    return order


def _tsops_name(name: str, taken: set[str]) -> str | None:
    """A tsops host name for an Ansible one: itself, its first label, or None."""
    lowered = name.lower()
    for candidate in (lowered, lowered.split(".")[0], re.sub(r"[^a-z0-9-]+", "-", lowered)):
        candidate = candidate.strip("-")
        if HOSTNAME_RE.fullmatch(candidate) and candidate not in taken:
            return candidate
    return None


def _group_name(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def convert(inventory: AnsibleInventory) -> Imported:
    """Map every host to a tsops server, reporting what does not map (exit 2 when none can)."""
    path, notes = inventory.path, []
    chains = _ancestors(inventory)
    first_group: dict[str, str] = {}
    memberships: dict[str, list[str]] = {}
    for listing in inventory.groups.values():
        for host in listing.hosts:
            if listing.name not in ("all", "ungrouped"):
                first_group.setdefault(host, listing.name)
                memberships.setdefault(host, []).append(listing.name)
    unmapped: dict[str, set[str]] = {}
    hosts: list[ImportedHost] = []
    renamed: list[str] = []
    taken: set[str] = set()
    problems = []
    for host, line in inventory.host_lines.items():
        group = first_group.get(host)
        variables: dict[str, Any] = {}
        for ancestor in reversed(chains.get(group or "ungrouped", ["all"])):
            variables.update(inventory.groups[ancestor].vars if ancestor in inventory.groups
                             else {})
        variables.update(inventory.host_vars.get(host, {}))
        settings: dict[str, Any] = {}
        address = variables.get("ansible_host", variables.get("ansible_ssh_host"))
        name = _tsops_name(host, taken)
        if address is None and address_problem(host):
            problems.append(f"{path}:{line}: host {host!r} has no address: give it "
                            "ansible_host (its name is not a host name or an address)")
            continue
        if name is None:
            problems.append(f"{path}:{line}: host {host!r}: no tsops name can be made from it "
                            "(lowercase letters, digits and hyphens)")
            continue
        taken.add(name)
        if address is not None:
            settings["address"] = str(address)
        elif name != host:
            settings["address"] = host
        user = variables.get("ansible_user", variables.get("ansible_ssh_user"))
        if user is not None:
            settings["user"] = str(user)
        port = variables.get("ansible_port", variables.get("ansible_ssh_port"))
        if port is not None:
            settings["port"] = int(port) if str(port).isdigit() else port
        key = variables.get("ansible_ssh_private_key_file",
                            variables.get("ansible_private_key_file"))
        if key is not None:
            settings["identity_file"] = str(key)
        if "ansible_become" in variables:
            settings["sudo"] = str(variables["ansible_become"]).lower() in TRUE
        args = " ".join(str(variables.get(k, "")) for k in ("ansible_ssh_common_args",
                                                              "ansible_ssh_extra_args"))
        jump = JUMP.search(args)
        if jump:
            if "," in jump[1]:
                unmapped.setdefault("a ProxyJump chain of several hosts (tsops takes one "
                                    "jump_host; use ssh_config)", set()).add(host)
            else:
                settings["jump_host"] = jump[1]
        elif args.strip():
            unmapped.setdefault("ansible_ssh_common_args/extra_args other than ProxyJump",
                                set()).add(host)
        for variable in variables:
            if variable in SECRETS:
                unmapped.setdefault(f"{variable} (tsops never keeps passwords: use an SSH key "
                                    "and passwordless sudo)", set()).add(host)
            elif variable not in MAPPED:
                unmapped.setdefault(variable, set()).add(host)
        hosts.append(ImportedHost(name, host, _group_name(group) if group else None, line,
                                  settings))
        if name != host:
            renamed.append(f"{host} -> {name}")
        others = memberships.get(host, [])[1:]
        if others:
            notes.append(f"{name} is also in group(s) {', '.join(others)}: a tsops server sits "
                         f"in one group ({group}); add tags to select it by the others")
    if problems:
        raise InventoryError(problems)
    if renamed:
        shown = ", ".join(renamed[:4]) + (f" and {len(renamed) - 4} more" if len(renamed) > 4
                                           else "")
        notes.insert(0, f"{len(renamed)} host(s) renamed to tsops names (lowercase, no dots; "
                        f"each keeps its full name as address): {shown}")
    if not hosts:
        raise InventoryError([f"{path}: no hosts found in this Ansible inventory"])
    for group_name in dict.fromkeys(h.group for h in hosts if h.group):
        original = [g for g in inventory.groups if _group_name(g) == group_name]
        if original and original[0] != group_name:
            notes.append(f"group {original[0]} is named {group_name}")
    for variable, names in sorted(unmapped.items()):
        notes.append(f"not imported: {variable} (on {len(names)} host(s), e.g. "
                     f"{sorted(names)[0]})")
    return Imported(hosts, notes)


def _common(hosts: list[ImportedHost], key: str) -> Any:
    values = {repr(h.settings.get(key)) for h in hosts}
    if len(values) == 1 and key in hosts[0].settings:
        return hosts[0].settings[key]
    return None


CONNECTION_KEYS = ("user", "port", "identity_file", "sudo", "jump_host")


def servers_section(imported: Imported) -> CommentedMap:
    """The `servers:` mapping: settings shared by a whole group are written once on it."""
    servers = CommentedMap()
    servers["tags"] = CommentedSeq(["tag:server"])
    servers["tags"].fa.set_flow_style()
    everyone = imported.hosts
    for key in CONNECTION_KEYS:
        value = _common(everyone, key)
        if value is not None:
            servers[key] = value
    lifted = {k for k in CONNECTION_KEYS if k in servers}

    def host_entry(host: ImportedHost, skip: set[str]) -> CommentedMap | None:
        entry = CommentedMap((k, v) for k, v in host.settings.items() if k not in skip)
        return entry or None

    ungrouped = [h for h in everyone if h.group is None]
    if ungrouped:
        servers["hosts"] = CommentedMap()
        for host in ungrouped:
            servers["hosts"][host.name] = host_entry(host, lifted)
    groups: dict[str, list[ImportedHost]] = {}
    for host in everyone:
        if host.group is not None:
            groups.setdefault(host.group, []).append(host)
    if groups:
        servers["groups"] = CommentedMap()
        for name, members in groups.items():
            group = CommentedMap()
            skip = set(lifted)
            for key in CONNECTION_KEYS:
                value = _common(members, key)
                if key not in lifted and value is not None and len(members) > 1:
                    group[key] = value
                    skip.add(key)
            group["hosts"] = CommentedMap()
            for host in members:
                group["hosts"][host.name] = host_entry(host, skip)
            servers["groups"][name] = group
    return servers


SKELETON = """\
version: 1
tailnet:
  name: "-"
  credentials:
    api_token: {env: TS_API_KEY}
"""


def render(imported: Imported, source: Path, base_text: str | None, base_name: str) -> str:
    """The tsops inventory: `base_text` (or a skeleton) with its servers section replaced."""
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    document = yaml.load(base_text if base_text is not None else SKELETON)
    servers = servers_section(imported)
    document["servers"] = servers
    header = [f"Servers imported from the Ansible inventory {source} (tsops inventory import "
              "ansible)."]
    if base_text is None:
        header += ["Next: set tailnet.name and the API credentials, then add recorders, storage",
                   "and ssh_rules (docs/inventory.md), and run `tsops check` on this file."]
    else:
        header += [f"Everything but `servers` is from {base_name}."]
    header += [f"Note: {note}" for note in imported.notes]
    document.yaml_set_start_comment("\n".join(header))
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
