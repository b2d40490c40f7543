"""Help screens that speak the operator's words: `--from SOURCE`, not `--from <str>`.

Typer names a value by its Python type (`<str>`, `<list[str]>`, `<int range>`, `{inventory}`),
which tells an operator nothing about what to type. Every value an option or argument takes is
named here once, by its flag, so the same word means the same thing on every command. A flag
that is not listed gets its own name in capitals; a choice lists its values (`table|json`).
"""

from __future__ import annotations

from typing import Any

# One word per kind of value, shared by every command that takes it (see docs/cli.md).
METAVARS: dict[str, str] = {
    "--access-key-env": "VAR",
    "--access-key-keyring": "SERVICE/NAME",
    "--address": "ADDRESS",
    "--canary-timeout": "SECONDS",
    "--canary-user": "USER",
    "--checkpoint": "FILE",
    "--command": "TEXT",
    "--container": "CONTAINER",
    "--concurrency": "N",
    "--context": "LINES",
    "--endpoint": "URL",
    "--from": "SOURCE",
    "--group": "GROUP",
    "--idle-limit": "SECONDS",
    "--inventory": "INVENTORY",
    "--key": "SERVICE/NAME",
    "--key-env": "VAR",
    "--key-file": "FILE",
    "--limit": "PATTERN",
    "--manifest": "FILE",
    "--manifest-dir": "DIR",
    "--namespace": "NAMESPACE",
    "--node": "NODE",
    "--pod": "POD",
    "--port": "PORT",
    "--previous": "FILE",
    "--profile": "PROFILE",
    "--public-key": "KEY",
    "--region": "REGION",
    "--retention-days": "DAYS",
    "--s3-timeout": "SECONDS",
    "--secret-key-env": "VAR",
    "--secret-key-keyring": "SERVICE/NAME",
    "--session-type": "TYPE",
    "--since": "TIME",
    "--sort": "FIELD",
    "--speed": "FACTOR",
    "--tag": "TAG",
    "--to": "DESTINATION",
    "--until": "TIME",
    "--user": "USER",
    "--write": "N",
}

ARGUMENTS: dict[str, str] = {
    "host": "HOST",
    "inventory": "INVENTORY",
    "pattern": "REGEX",
}


_PLAIN: dict[type, type] = {}


def _plain_argument(param: Any) -> None:
    """Show an argument as `INVENTORY` (usage and list), as Click does, not `{INVENTORY} <path>`.

    Typer's argument class marks a required argument with braces and adds its Python type; its
    subclass here keeps everything else (parsing, completion, defaults) as it is.
    """
    base = type(param)
    if not hasattr(base, "_usage_display_name"):
        return
    if base not in _PLAIN:

        def usage(self: Any) -> str:
            name = str(self.metavar)
            if not self.required:
                name = f"[{name}]"
            return name if self.nargs == 1 else f"{name}..."

        def no_type(self: Any, ctx: Any) -> None:
            return None

        _PLAIN[base] = type(f"Plain{base.__name__}", (base,), {
            "_usage_display_name": usage, "display_type_rich": no_type})
    param.__class__ = _PLAIN[base]


def _choices(param: Any) -> tuple[Any, ...]:
    """The values a choice option takes (Typer describes them; Click keeps them on `type`)."""
    described = getattr(param, "type_descriptor", None)
    if described is not None:
        return tuple(described.choices or ()) if described.is_choice else ()
    return tuple(getattr(getattr(param, "type", None), "choices", None) or ())


def name_values(command: Any) -> None:
    """Give every option and argument of `command` and its subcommands an operator's metavar.

    `command` is the Click command Typer builds; only its public attributes are used (`params`,
    `commands`), so Typer's own copy of Click and Click itself both work.
    """
    for param in getattr(command, "params", ()):
        if param.param_type_name == "argument":
            if param.metavar is None:
                param.metavar = ARGUMENTS.get(param.name, param.name.upper())
            _plain_argument(param)
            continue
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        long = max(param.opts, key=len)
        choices = _choices(param)
        if long in METAVARS:
            param.metavar = METAVARS[long]
        elif choices:
            param.metavar = "|".join(str(getattr(c, "value", c)) for c in choices)
        else:
            param.metavar = long.lstrip("-").replace("-", "_").upper()
    for sub in getattr(command, "commands", {}).values():
        name_values(sub)
