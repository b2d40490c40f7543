"""Start moto_server, with the `aws:SecureTransport` condition key answered as S3 answers it.

Why: tsops's bucket policy denies every request where `aws:SecureTransport` is false (the
"TLS only" statement). moto 5.2 applies a Deny statement whatever its `Condition` says (it
knows no `Bool` operator), so on moto the statement refuses every object write even over TLS.
The lab serves S3 over TLS only (`-c CERT -k KEY`), so every request it gets has
`aws:SecureTransport` true: a statement asking for `false` never applies, one asking for `true`
applies as if that key were not there. Every other condition is left to moto as it is.

Run as a script (`python moto_launcher.py <moto_server arguments>`): it imports only moto and
the standard library. `patched()` is the same change for a test in this process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.iam.access_control import IAMPolicyStatement, PermissionResult

SECURE_TRANSPORT = "aws:securetransport"  # condition keys are case-insensitive


def secure_transport_wanted(statement: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The values a statement's `Bool` condition wants for aws:SecureTransport (lowercase),
    and the statement without that key ([] and the statement itself when it has none)."""
    condition = statement.get("Condition")
    if not isinstance(condition, dict) or not isinstance(condition.get("Bool"), dict):
        return [], statement
    wanted: list[str] = []
    rest: dict[str, Any] = {}
    for key, value in condition["Bool"].items():
        if key.lower() == SECURE_TRANSPORT:
            wanted += [str(v).lower() for v in (value if isinstance(value, list) else [value])]
        else:
            rest[key] = value
    if not wanted:
        return [], statement
    others = {op: keys for op, keys in condition.items() if op != "Bool"}
    if rest:
        others["Bool"] = rest
    stripped = {k: v for k, v in statement.items() if k != "Condition"}
    if others:
        stripped["Condition"] = others
    return wanted, stripped


def over_tls(original: Callable[..., PermissionResult]) -> Callable[..., PermissionResult]:
    """Wrap moto's statement evaluation for a server whose every request came over TLS."""

    def is_action_permitted(self: IAMPolicyStatement, *args: Any, **kwargs: Any
                            ) -> PermissionResult:
        wanted, stripped = secure_transport_wanted(self._statement)
        if not wanted:
            return original(self, *args, **kwargs)
        if "true" not in wanted:
            return PermissionResult.NEUTRAL  # the statement is about plain HTTP requests
        return original(IAMPolicyStatement(stripped), *args, **kwargs)

    return is_action_permitted


@contextmanager
def patched() -> Iterator[None]:
    """moto's statement evaluation, answering aws:SecureTransport as true, inside the block."""
    original = IAMPolicyStatement.is_action_permitted
    IAMPolicyStatement.is_action_permitted = over_tls(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        IAMPolicyStatement.is_action_permitted = original  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """Run moto's server with TLS required and the patch in place."""
    if "-c" not in argv or "-k" not in argv:
        print("moto_launcher: serve TLS only (-c CERT -k KEY): aws:SecureTransport is "
              "answered true for every request", file=sys.stderr)
        return 2
    from moto.server import main as moto_main

    with patched():
        moto_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
