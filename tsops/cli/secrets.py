"""`tsops secrets set|get|delete|list`: keep secrets in the OS keyring; values never in argv."""

from __future__ import annotations

import getpass
import sys

from rich.text import Text

from tsops.cli import console
from tsops.cli.jsonout import emit
from tsops.errors import UsageError
from tsops.secrets import (
    SecretError,
    delete,
    fetch,
    list_entries,
    parse_entry,
    store,
    usable_keyring,
)


def _read_value(entry: str) -> str:
    """Read a secret from a hidden prompt (asked twice), or from piped standard input."""
    if sys.stdin.isatty():
        value = getpass.getpass(f"Secret for {entry} (input hidden): ")
        if value and getpass.getpass("Again, to confirm: ") != value:
            raise UsageError(f"the two values for {entry} differ; nothing stored")
    else:
        value = sys.stdin.read()
        # `echo "$TOKEN" |` adds one line ending; it is not part of the secret.
        for ending in ("\r\n", "\n"):
            if value.endswith(ending):
                value = value.removesuffix(ending)
                break
    if not value:
        raise UsageError(f"no value given for {entry}; nothing stored")
    return value


def run_set(entry: str) -> None:
    """Store SERVICE/NAME from a hidden prompt or standard input, then say where it went."""
    name = str(parse_entry(entry))
    backend = usable_keyring()  # refuse before the operator types a secret for nothing
    store(name, _read_value(name))
    console.line(f"{name}: stored in the keyring ({backend})")


def run_get(entry: str, *, reveal: bool) -> None:
    """Say whether SERVICE/NAME is set; print its value only when `reveal` is asked for."""
    name = str(parse_entry(entry))
    usable_keyring()
    value = fetch(name)
    if value is None:
        raise SecretError(f"keyring entry {name} is not set; store it: `tsops secrets set {name}`")
    if reveal:
        console.line(value)
    else:
        console.line(f"{name}: set (add --reveal to print the value)")


def run_delete(entry: str) -> None:
    """Delete SERVICE/NAME; deleting an entry that is not set changes nothing and succeeds."""
    name = str(parse_entry(entry))
    usable_keyring()
    if delete(name):
        console.line(f"{name}: deleted")
    else:
        console.line(f"{name}: was not set; nothing to delete")


def run_list(output: str = "table") -> None:
    """Print the entries tsops stored, one SERVICE/NAME per line (names only, never values)."""
    backend = usable_keyring()
    names = list_entries()
    if output == "json":
        emit({"backend": str(backend), "entries": list(names)})
        return
    if not names:
        console.err.print(Text("no keyring entries stored by tsops on this machine"))
    for name in names:
        console.line(name)
