"""Every command, option and argument of the CLI says what it is for: the whole command tree, every
group loaded, is walked and anything without help text is named."""

from __future__ import annotations

import click
import typer.main

from complai.cli.main import LazyGroup, app


def _walk(command: click.Command, ctx: click.Context, path: str) -> list[str]:
    missing = []
    if not (command.help or command.short_help):
        missing.append(f"{path}: the command")
    for param in command.params:
        if isinstance(param, click.Option) and param.name == "help":
            continue
        if not (getattr(param, "help", None) or "").strip():
            missing.append(f"{path}: {param.opts[0] if isinstance(param, click.Option) else param.human_readable_name}")
    if isinstance(command, click.Group):
        names = command.list_commands(ctx)
        children = (
            command.load_all(ctx) if isinstance(command, LazyGroup) else [command.get_command(ctx, n) for n in names]
        )
        for child in children:
            assert child is not None and child.name is not None
            sub = click.Context(child, info_name=child.name, parent=ctx)
            missing += _walk(child, sub, f"{path} {child.name}")
    return missing


def _tree() -> tuple[click.Command, click.Context]:
    root = typer.main.get_command(app)
    return root, click.Context(root, info_name="complai")


def test_every_command_option_and_argument_has_help_text() -> None:
    root, ctx = _tree()
    assert _walk(root, ctx, "complai") == []


def test_the_walk_sees_every_command() -> None:
    """The walk reaches the leaves (a nested group's commands) and names what lacks help."""
    root, ctx = _tree()
    bare = click.Command("bare", params=[click.Option(["--x"]), click.Argument(["thing"])])
    assert _walk(bare, click.Context(bare), "bare") == ["bare: the command", "bare: --x", "bare: THING"]
    ledger = root.get_command(ctx, "ledger") if isinstance(root, click.Group) else None
    assert isinstance(ledger, click.Group) and "witness" in ledger.list_commands(ctx)
