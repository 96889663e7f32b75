"""A refused command changes nothing: every state-changing command, run with the token of an analyst
that no rule allows anything, exits 2 and leaves the workspace's files (names, sizes, modes), the files it was
asked to write and the ledger as they were; the ledger gains only the refusal itself (access.denied)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from complai.app.workspace import Workspace
from complai.crypto.sealing import generate_keypair
from complai.events import decode_event
from complai.ledger.witness import Witness
from complai.vault.schema import load_schema
from tests.cli.test_authn import cli, one_line
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

DB_FILES = ("complai.db", "complai.db-wal", "complai.db-shm", "complai.db-journal")


@dataclass
class Setup:
    ws: Path
    files: Path  # inputs the commands read
    out: Path  # where commands are asked to write: must stay empty
    token: str  # of `nobody`, an analyst: a role without rights of its own, and no rule names it
    ids: dict[str, str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("refusals")
    path, files, out = base / "ws", base / "in", base / "out"
    files.mkdir()
    out.mkdir()
    schema2 = {**SCHEMA, "name": "other"}
    (files / "other.yaml").write_text(yaml.safe_dump(schema2))
    people_frame().to_csv(files / "people.csv", index=False)
    consents_frame().to_csv(files / "consents.csv", index=False)
    (files / "note.txt").write_text("Call Margarethe Vandersloot at margarethe.vandersloot@example.org\n")
    (files / "train.yaml").write_text(
        yaml.safe_dump({"dataset": "customers", "label": "segment", "model": "logreg", "target_epsilon": 1.0})
    )
    public = generate_keypair(files / "bank.key")
    witness = Witness.init(files / "witness", "witness.example.org/w1")
    ids: dict[str, str] = {"witness": witness.verifier.encode()}
    with Workspace.init(path) as w:
        w.catalog.register(load_schema(SCHEMA, w.taxonomy), actor="owner")
        w.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
        w.identity.add("owner", "ana", "service")
        w.identity.grant_role("owner", "ana", "analyst")
        w.identity.add("owner", "nobody", "service")
        w.identity.grant_role("owner", "nobody", "analyst")  # a role with no rights of its own
        token = w.identity.create_token("owner", "nobody", expires="P1D")[1]
        ids["owner_token"] = w.identity.create_token("owner", "owner", expires="P1D")[0]
        ids["rule"] = str(w.policy.add("owner", "ana", "customers", "read", "credit_scoring", "allow").id)
        owner = w.session("owner", "credit_scoring")
        ids["agreement"] = w.agreements.create(
            "owner",
            "bank",
            public,
            "customers",
            "credit_scoring",
            ["customer_id", "income"],
            recipient_jurisdiction="EU",
        ).id
        admin = w.session("owner", "subject_request")
        ids["request"] = str(admin.request_open("access", "C-1001").value["id"])
        ids["incident"] = str(w.session("owner", "security").incident_open("test").value["id"])
        w.ledger.checkpoint()
        del owner
    yield Setup(path, files, out, token, ids)


def commands(s: Setup) -> list[list[str]]:
    f, o, ids = s.files, s.out, s.ids
    return [
        ["ropa", "--out", str(o / "ropa")],
        ["train", str(f / "train.yaml")],
        ["ledger", "checkpoint"],
        ["ledger", "export", str(o / "export")],
        ["ledger", "witness", "add", ids["witness"]],
        ["ledger", "witness", "cosign", str(f / "witness")],
        ["dataset", "create", "other", "--schema", str(f / "other.yaml")],
        ["dataset", "ingest", "customers", str(f / "people.csv"), "--consents", str(f / "consents.csv")],
        ["subject", "export", "C-1001", "--out", str(o / "subject.json")],
        ["subject", "erase", "C-1001"],
        ["subject", "rectify", "C-1001", "--dataset", "customers", "--field", "income", "--value", "5"],
        ["subject", "restrict", "C-1001"],
        ["subject", "object", "C-1001", "--purpose", "marketing"],
        ["consent", "grant", "C-1003", "--purpose", "marketing"],
        ["consent", "withdraw", "C-1001", "--purpose", "credit_scoring"],
        ["keys", "rotate"],
        ["retention", "sweep"],
        ["backup", "create", str(o / "a.backup")],  # would create keys/backup.key
        ["backup", "create", str(o / "b.backup"), "--key-file", str(o / "backup.key")],
        ["principal", "add", "mallory"],
        ["principal", "disable", "ana"],
        ["token", "create", "--principal", "owner", "--expires", "P1D"],
        ["token", "revoke", ids["owner_token"]],
        ["token", "max-lifetime", "P10Y"],
        ["role", "grant", "owner", "--principal", "ana"],
        ["role", "revoke", "analyst", "--principal", "ana"],
        ["policy", "allow", "ana", "--dataset", "*", "--action", "*", "--purpose", "*"],
        ["policy", "deny", "ana", "--dataset", "*", "--action", "read", "--purpose", "*"],
        ["policy", "remove", ids["rule"]],
        [
            "share",
            "create",
            "--recipient",
            "mallory",
            "--recipient-key",
            str(f / "bank.key.pub"),
            "--dataset",
            "customers",
            "--purpose",
            "credit_scoring",
            "--fields",
            "customer_id,income",
            "--recipient-jurisdiction",
            "EU",
        ],
        ["share", "revoke", ids["agreement"]],
        ["share", "export", ids["agreement"], "--out", str(o / "share.pkg")],
        ["deid", "detokenize", "tok_0123456789abcdef", "--purpose", "customer_support"],
        ["deid", "scan", "customers", "--purpose", "credit_scoring"],
        ["dp", "budget", "customers", "--set", "5.0", "1e-5"],
        [
            "dp",
            "query",
            "customers",
            "SELECT COUNT(*) FROM customers",
            "--epsilon",
            "0.5",
            "--purpose",
            "credit_scoring",
        ],
        ["audit", "--out", str(o / "audit")],
        ["request", "open", "--type", "erasure", "--subject", "C-1002"],
        ["request", "verify", ids["request"], "--method", "document"],
        ["request", "acknowledge", ids["request"]],
        ["request", "extend", ids["request"], "--reason", "complex"],
        ["request", "reject", ids["request"], "--reason", "manifestly unfounded"],
        ["request", "fulfil", ids["request"], "--subject", "C-1001", "--out", str(o / "fulfil.json")],
        ["incident", "open", "--description", "nothing"],
        ["incident", "notify", ids["incident"], "--authority", "CNIL"],
        ["incident", "close", ids["incident"]],
        ["dpia", "generate", "customers", "--out", str(o / "dpia.json")],
        ["dpia", "sign", "customers", "--by", "dpo"],
    ]


def snapshot(root: Path) -> dict[str, tuple[str, int | None, int]]:
    """Every file and directory under root: kind, size (not for the database, which records the
    refusal itself) and mode."""
    found: dict[str, tuple[str, int | None, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            size = None if kind == "dir" or name in DB_FILES else st.st_size
            found[str(p.relative_to(root))] = (kind, size, stat.S_IMODE(st.st_mode))
    return found


def ledger_size(path: Path) -> int:
    with Workspace.open(path) as w:
        return w.ledger.head().size


def test_every_refused_command_leaves_no_trace(setup: Setup) -> None:
    problems = []
    for args in commands(setup):
        before_tree, before_out = snapshot(setup.ws), snapshot(setup.out)
        before_files = snapshot(setup.files)
        size = ledger_size(setup.ws)
        r = cli("--workspace", str(setup.ws), "--token", setup.token, *args)
        label = " ".join(args[:2])
        if r.returncode != 2 or not one_line(r):
            problems.append(f"{label}: exit {r.returncode}: {r.stderr.strip()[:200]}")
        if snapshot(setup.ws) != before_tree:
            problems.append(f"{label}: workspace files changed: {_delta(before_tree, snapshot(setup.ws))}")
        if snapshot(setup.out) != before_out or snapshot(setup.files) != before_files:
            problems.append(f"{label}: wrote outside the workspace: {_delta(before_out, snapshot(setup.out))}")
        with Workspace.open(setup.ws) as w:
            kinds = [decode_event(e.data).kind for e in w.ledger.entries(start=size)]
        if any(k != "access.denied" for k in kinds):
            problems.append(f"{label}: recorded {kinds}")
    assert not problems, "\n".join(problems)


def _delta(a: dict[str, object], b: dict[str, object]) -> str:
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in changed[:5])
