"""The layering rules of docs/architecture.md, checked on the source itself."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tsops"
# Each outside system's client library, and the one module allowed to import it.
SEAMS = {
    "fabric": {"remote.py"},
    "invoke": {"remote.py"},
    "paramiko": {"remote.py", "tailnet_ssh.py"},
    "boto3": {"s3.py"},
    "httpx": {"tailscale_api.py"},
    "keyring": {"secrets.py"},
}
TERMINAL = ("typer", "rich", "click", "tsops.cli")
# The CLI may hold at most this share of the package's lines (issue: flows below the CLI).
CLI_SHARE = 0.15


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    """Every module of the package: dotted name, path, syntax tree."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path, ast.parse(path.read_text(encoding="utf-8"))


def imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Every module `tree` imports, anywhere in it (absolute dotted names)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def below_cli() -> Iterator[tuple[str, Path, ast.Module]]:
    """The modules that must never print, prompt or exit."""
    for name, path, tree in modules():
        if not name.startswith("tsops.cli") and name not in ("tsops.__main__",):
            yield name, path, tree


def test_nothing_below_the_cli_imports_the_terminal() -> None:
    offenders = {
        name: sorted(i for i in imports(tree, name, path.name == "__init__.py")
                     if i.split(".")[0] in TERMINAL or i.startswith("tsops.cli"))
        for name, path, tree in below_cli()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("call", ["sys.exit", "print", "input", "getpass.getpass", "exit"])
def test_nothing_below_the_cli_prints_prompts_or_exits(call: str) -> None:
    found = []
    for name, _, tree in below_cli():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == call:
                found.append(f"{name}:{node.lineno}")
    assert found == []


def test_each_outside_system_has_one_seam() -> None:
    offenders = []
    for name, path, tree in modules():
        for imported in imports(tree, name, path.name == "__init__.py"):
            allowed = SEAMS.get(imported.split(".")[0])
            if allowed is not None and path.relative_to(PACKAGE).as_posix() not in allowed:
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def test_boto3_clients_are_built_in_one_module() -> None:
    builders = [f"{name}:{node.lineno}" for name, _, tree in modules()
                for node in ast.walk(tree)
                if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("boto3.")
                and ast.unparse(node.func).endswith(".client")]
    assert builders and all(b.startswith("tsops.s3:") for b in builders)


def test_no_import_circle() -> None:
    """No two modules of the package import each other, directly or through others."""
    known = {name for name, _, _ in modules()}
    graph: dict[str, set[str]] = {}
    for name, path, tree in modules():
        targets = set()
        for imported in imports(tree, name, path.name == "__init__.py"):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            # A package's __init__ is a face, not a room: `from tsops.x import y` is y.
            if imported and imported != name and imported != "tsops":
                targets.add(imported)
        graph[name] = targets
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_cli_is_a_thin_layer() -> None:
    lines = {path: len(path.read_text(encoding="utf-8").splitlines())
             for path in PACKAGE.rglob("*.py")}
    cli = sum(n for path, n in lines.items() if "cli" in path.relative_to(PACKAGE).parts)
    assert cli / sum(lines.values()) <= CLI_SHARE, f"cli/ has {cli} of {sum(lines.values())}"
