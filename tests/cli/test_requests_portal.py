"""`complai request show|fulfil` for a request made through the portal: show says it came through the
portal and what was asked; fulfil needs no --subject (and refuses one), and keeps the export for the
person at the portal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complai.access.identity import OWNER
from complai.app.portal import OUTBOX, OutboxChannel, PortalLimits
from complai.app.workspace import Workspace
from complai.cli.main import app
from complai.errors import ComplaiError
from tests.dp.conftest import adult_workspace
from tests.service.test_portal import code_in

LIMITS = PortalLimits()


class Ran:
    """What a command did, run in this process (a process per command costs seconds here); a refusal is
    what `complai` turns into one line on stderr and its exit status."""

    def __init__(self, *args: str) -> None:
        r = CliRunner().invoke(app, list(args), prog_name="complai", env={"COLUMNS": "200"})
        self.stdout = r.stdout
        if isinstance(r.exception, ComplaiError):
            self.returncode, self.stderr = r.exception.exit_code, r.exception.message
        else:
            assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
            self.returncode, self.stderr = r.exit_code, r.stderr


def run(*args: str) -> Ran:
    return Ran(*args)


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, dict[str, str], str, str]:
    """A workspace with a portal rectification (with an escape sequence in its description) and a portal
    access request, both verified; (path, {kind: register id}, the access request's reference and
    follow-up code, the access requester's id)."""
    path = tmp_path / "ws"
    w = adult_workspace(Workspace.init(path), 6)
    try:
        owner = w.session(OWNER, "security")
        owner.add_principal("portal", "service")
        owner.add_rule("portal", "*", "admin", "subject_request")
        portal = w.session("portal", "subject_request")
        box = path / OUTBOX
        subjects = [str(s) for s in w.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[:2]]
        follow = ""
        for kind, subject, details in (
            ("rectification", subjects[0], "age should be 44\x1b[2J [bold]please[/bold]"),
            ("access", subjects[1], None),
        ):
            before = set(box.iterdir()) if box.exists() else set()
            receipt = portal.portal_submit(
                kind, subject, address="cli", channel=OutboxChannel(box), limits=LIMITS, details=details
            )
            [message] = set(box.iterdir()) - before
            done = portal.portal_verify(receipt.reference, code_in(message), address="cli", limits=LIMITS)
            if kind == "access":
                follow = f"{receipt.reference} {done.follow_code}"
        ids = {r["type"]: r["id"] for r in w.session(OWNER, "audit").requests()}
    finally:
        w.close()
    return path, ids, follow, subjects[1]


def test_show_says_it_came_through_the_portal(made: tuple[Path, dict[str, str], str, str]) -> None:
    path, ids, _, _ = made
    w = ["--workspace", str(path)]
    r = run(*w, "request", "show", ids["rectification"])
    assert r.returncode == 0, r.stderr
    assert "came through the portal: identity verified by email there" in r.stdout
    assert "asked: age should be 44" in r.stdout and "[bold]please[/bold]" in r.stdout  # as typed, no markup
    assert "\x1b" not in r.stdout  # no terminal control from a member of the public
    shown = json.loads(run(*w, "request", "show", ids["rectification"], "--json").stdout)
    assert shown["portal"]["kind"] == "rectification" and shown["portal"]["identifier_held"] is True
    opened = json.loads(
        run(*w, "request", "open", "--type", "erasure", "--subject", "X-1", "--jurisdiction", "EU", "--json").stdout
    )
    plain = run(*w, "request", "show", opened["id"])
    assert plain.returncode == 0 and "portal" not in plain.stdout


def test_fulfil_without_a_subject_keeps_the_export_for_the_person(
    made: tuple[Path, dict[str, str], str, str], tmp_path: Path
) -> None:
    path, ids, follow, subject = made
    w = ["--workspace", str(path)]
    out = tmp_path / "export.json"
    for extra in (["--subject", subject], ["--out", str(out)], ["--purpose", "marketing"]):
        r = run(*w, "request", "fulfil", ids["access"], *extra)
        assert r.returncode == 2 and "came through the portal" in r.stderr, r.stderr
    assert not out.exists()
    assert json.loads(run(*w, "request", "show", ids["access"], "--json").stdout)["status"] == "open"

    r = run(*w, "request", "fulfil", ids["access"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "fulfilled" and subject not in r.stdout
    assert not out.exists()

    reference, code = follow.split()
    with Workspace.open(path) as ws:
        portal = ws.session("portal", "subject_request")
        view = portal.portal_status(reference, code, address="cli", limits=LIMITS)
        assert view["status"] == "fulfilled" and view["export"] is True
        exported = json.loads(portal.portal_export(reference, code, address="cli", limits=LIMITS))
    assert exported["subject"]["id"] == subject


def test_fulfil_of_another_request_still_needs_a_subject(made: tuple[Path, dict[str, str], str, str]) -> None:
    path, _, _, _ = made
    w = ["--workspace", str(path)]
    opened = json.loads(
        run(*w, "request", "open", "--type", "erasure", "--subject", "X-1", "--jurisdiction", "EU", "--json").stdout
    )
    r = run(*w, "request", "fulfil", opened["id"])
    assert r.returncode == 2 and "--subject is required" in r.stderr
