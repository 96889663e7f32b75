"""The root command imports a group only when it runs: what `complai --help` lists without importing
must match the groups themselves, every group must still run, and shell completion works on the lazy
tree (the modules loaded are checked in tests/architecture/test_startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
import typer.main
from typer.testing import CliRunner

from complai.cli.main import COMMANDS, LazyGroup, app


def _root() -> tuple[LazyGroup, click.Context]:
    group = typer.main.get_command(app)
    assert isinstance(group, LazyGroup)
    return group, group.make_context("complai", ["status"], resilient_parsing=True)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    group, ctx = _root()
    command = group.get_command(ctx, name)
    assert command is not None and command.name == name
    own = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
    assert own == COMMANDS[name][1]


def test_help_lists_every_command() -> None:
    r = CliRunner().invoke(app, ["--help"], prog_name="complai", env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for name, (_, help_text) in COMMANDS.items():
        assert f" {name} " in r.output and help_text[:40] in r.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_shows_its_help(name: str) -> None:
    r = CliRunner().invoke(app, [name, "--help"], prog_name="complai", env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert f"complai {name}" in r.output


def test_an_unknown_command_is_refused_with_a_suggestion() -> None:
    r = subprocess.run([sys.executable, "-m", "complai.cli.main", "tokn"], capture_output=True, text=True, check=False)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "No such command 'tokn'" in r.stderr and "'token'" in r.stderr


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_COMPLAI_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    r = subprocess.run([sys.executable, "-m", "complai.cli.main"], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_completion_of_command_names_and_their_commands() -> None:
    assert _complete("complai to") == ["token"]
    assert set(_complete("complai d")) == {"dataset", "deid", "dp", "dpia"}
    assert {"create", "list", "revoke", "max-lifetime"} <= set(_complete("complai token "))
    assert "--principal" in _complete("complai token list --pr")


def test_completion_script_for_bash() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "complai.cli.main", "--show-completion", "bash"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0 and "_COMPLAI_COMPLETE=complete_bash" in r.stdout
