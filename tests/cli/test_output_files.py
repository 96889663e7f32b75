"""Every command that writes a file a user names: never over an existing file without --force, never
through a symlink, never into the workspace's keys/ (not even through a linked parent), private modes,
and a refusal leaves the ledger and the files as they were."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from complai.app.workspace import Workspace
from complai.errors import ComplaiError
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


def cli(ws: Path, *args: str) -> int:
    """The CLI in process (as `complai --workspace WS ARGS`): its exit code, ComplaiError included."""
    from complai.cli.main import app

    try:
        app(["--workspace", str(ws), *args], prog_name="complai", standalone_mode=False)
    except ComplaiError as exc:
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        return int(exc.exit_code)
    return 0


def ledger_size(ws: Path) -> int:
    w = Workspace.open(ws)
    try:
        return w.ledger.head().size
    finally:
        w.close()


@dataclass(frozen=True)
class Output:
    """A command and the output it writes: a file (`argv(target)`) or a folder holding `names`."""

    name: str
    argv: Callable[[Path], list[str]]
    folder_names: tuple[str, ...] = ()  # non-empty: the target is a folder with these files


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    base = tmp_path_factory.mktemp("outputs")
    ws = base / "ws"
    w = Workspace.init(ws)
    try:
        from complai.vault.schema import load_schema

        w.catalog.register(load_schema(SCHEMA, w.taxonomy), actor="owner")
        w.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    finally:
        w.close()
    (base / "notes.txt").write_text("Call Anna at anna@example.com\n")
    people_frame().to_csv(base / "people.csv", index=False)
    assert cli(ws, "share", "keygen", "--out", str(base / "bank.key")) == 0
    from complai.crypto.sealing import load_public

    w = Workspace.open(ws)
    try:
        key = load_public((base / "bank.key.pub").read_text())
        aid = w.agreements.create(
            "owner", "bank", key, "customers", "credit_scoring", ["income"], max_uses=100, recipient_jurisdiction="EU"
        ).id
        rid = _verified_access_request(w, "C-1002")
    finally:
        w.close()
    assert cli(ws, "share", "export", aid, "--out", str(base / "first.pkg")) == 0
    return {"base": base, "ws": ws, "aid": aid, "rid": rid}


def _verified_access_request(w: Workspace, subject: str) -> str:
    s = w.session("owner", "subject_request")
    rid = str(s.request_open("access", subject).value["id"])
    s.request_verify(rid, "account")
    return rid


def outputs(env: dict[str, Path | str]) -> list[Output]:
    base = Path(env["base"])
    return [
        Output(
            "deid file",
            lambda t: ["deid", "file", str(base / "notes.txt"), "--out", str(t), "--regex-only"],
        ),
        Output(
            "deid table",
            lambda t: ["deid", "table", str(base / "people.csv"), "--quasi", "segment", "--k", "1", "--out", str(t)],
        ),
        Output("subject export", lambda t: ["subject", "export", "C-1001", "--out", str(t)]),
        Output("share keygen", lambda t: ["share", "keygen", "--out", str(t)]),
        Output("share export", lambda t: ["share", "export", str(env["aid"]), "--out", str(t)]),
        Output("dpia generate", lambda t: ["dpia", "generate", "customers", "--out", str(t)]),
        Output(
            "request fulfil", lambda t: ["request", "fulfil", str(env["rid"]), "--subject", "C-1002", "--out", str(t)]
        ),
        Output("backup create", lambda t: ["backup", "create", str(t)]),
        Output(
            "share open",
            lambda t: ["share", "open", str(base / "first.pkg"), "--key", str(base / "bank.key"), "--out", str(t)],
            ("data.csv", "manifest.json"),
        ),
        Output("ropa", lambda t: ["ropa", "--out", str(t)], ("ropa.json", "ropa.csv")),
        Output("audit", lambda t: ["audit", "--out", str(t), "--format", "json"], ("report.json",)),
        Output("ledger export", lambda t: ["ledger", "export", str(t)], ("manifest.json",)),
        Output(
            "witness init", lambda t: ["ledger", "witness", "init", str(t), "--name", "w.example/1"], ("witness.json",)
        ),
    ]


NAMES = [
    "deid file",
    "deid table",
    "subject export",
    "share keygen",
    "share export",
    "dpia generate",
    "backup create",
    "request fulfil",
    "share open",
    "ropa",
    "audit",
    "ledger export",
    "witness init",
]


def _output(env: dict[str, Path | str], name: str) -> Output:
    return next(o for o in outputs(env) if o.name == name)


def _refused(env: dict[str, Path | str], out: Output, target: Path, watched: list[Path]) -> None:
    ws = Path(env["ws"])
    before_files = {p: p.read_bytes() for p in watched}
    before_size = ledger_size(ws)
    assert cli(ws, *out.argv(target)) == 2
    assert {p: p.read_bytes() for p in watched} == before_files
    assert ledger_size(ws) == before_size
    parent = target.parent
    leftovers = [p.name for p in parent.iterdir() if "complai-partial" in p.name] if parent.is_dir() else []
    assert leftovers == []


@pytest.mark.parametrize("name", NAMES)
def test_existing_output_is_refused_and_unchanged(env: dict[str, Path | str], name: str, tmp_path: Path) -> None:
    out = _output(env, name)
    if out.folder_names:
        target = tmp_path / "folder"
        target.mkdir()
        victim = target / out.folder_names[0]
    else:
        target = victim = tmp_path / "existing"
    victim.write_text("keep me\n")
    _refused(env, out, target, [victim])
    assert victim.read_text() == "keep me\n"


@pytest.mark.parametrize("name", NAMES)
def test_symlinked_output_is_refused(env: dict[str, Path | str], name: str, tmp_path: Path) -> None:
    out = _output(env, name)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    if out.folder_names:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        target = tmp_path / "link-to-folder"
        target.symlink_to(elsewhere, target_is_directory=True)
        _refused(env, out, target, [victim])
        assert list(elsewhere.iterdir()) == []
    else:
        target = tmp_path / "link"
        target.symlink_to(victim)
        _refused(env, out, target, [victim])
        assert target.is_symlink() and victim.read_text() == "keep me\n"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("via_link", [False, True], ids=["direct", "linked-parent"])
def test_output_into_keys_is_refused_even_with_force(
    env: dict[str, Path | str], name: str, via_link: bool, tmp_path: Path
) -> None:
    out = _output(env, name)
    ws = Path(env["ws"])
    keys = ws / "keys"
    parent = keys
    if via_link:
        parent = tmp_path / "innocent"
        parent.symlink_to(keys, target_is_directory=True)
    watched = sorted(p for p in keys.iterdir() if p.is_file())
    before_bytes = {p: p.read_bytes() for p in watched}
    before_names = sorted(p.name for p in keys.iterdir())
    target = parent / ("sub" if out.folder_names else "kek.json")
    _refused(env, out, target, watched)
    argv = out.argv(target)
    without_force = ("backup create", "share keygen", "share export", "share open", "ledger export", "witness init")
    if name not in without_force:
        before = ledger_size(ws)
        assert cli(ws, *argv, "--force") == 2
        assert ledger_size(ws) == before
    assert sorted(p.name for p in keys.iterdir()) == before_names
    assert {p: p.read_bytes() for p in watched} == before_bytes


def test_force_overwrites_a_file_and_keeps_it_private(env: dict[str, Path | str], tmp_path: Path) -> None:
    ws = Path(env["ws"])
    target = tmp_path / "export.json"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    assert cli(ws, "subject", "export", "C-1001", "--out", str(target), "--force") == 0
    assert json.loads(target.read_text())["records"]["customers"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "name", ["deid file", "deid table", "subject export", "dpia generate", "backup create", "request fulfil"]
)
def test_new_output_files_are_0600(env: dict[str, Path | str], name: str, tmp_path: Path) -> None:
    target = tmp_path / "new-output"
    assert cli(Path(env["ws"]), *_output(env, name).argv(target)) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_share_open_output_is_private(env: dict[str, Path | str], tmp_path: Path) -> None:
    target = tmp_path / "opened"
    assert cli(Path(env["ws"]), *_output(env, "share open").argv(target)) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in ("data.csv", "manifest.json"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600


def test_output_into_a_missing_directory_is_refused_before_anything_is_recorded(
    env: dict[str, Path | str], tmp_path: Path
) -> None:
    for name in ("deid file", "deid table", "subject export", "dpia generate", "backup create", "share export"):
        target = tmp_path / "missing" / "out"
        _refused(env, _output(env, name), target, [])
        assert not target.parent.exists()


def test_share_open_of_a_directory_and_ledger_export_onto_a_file_are_refused(
    env: dict[str, Path | str], tmp_path: Path
) -> None:
    base, ws = Path(env["base"]), Path(env["ws"])
    assert cli(ws, "share", "open", str(tmp_path), "--key", str(base / "bank.key"), "--out", str(tmp_path / "o")) == 2
    assert not (tmp_path / "o").exists()
    f = tmp_path / "a-file"
    f.write_text("keep me\n")
    _refused(env, _output(env, "ledger export"), f, [f])


def test_deid_over_the_kek_through_the_real_cli(env: dict[str, Path | str]) -> None:
    ws = Path(env["ws"])
    kek = ws / "keys" / "kek.json"
    before = kek.read_bytes()
    args = [str(Path(env["base"]) / "notes.txt"), "--out", str(kek), "--regex-only", "--force"]
    r = subprocess.run(
        [sys.executable, "-m", "complai.cli.main", "--workspace", str(ws), "deid", "file", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "protected" in r.stderr
    assert kek.read_bytes() == before


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:s3cret-pw@127.0.0.1:5432/complai",
        "postgresql+psycopg://alice:s3cret-pw@db.example/complai",
        "postgresql://alice@127.0.0.1/complai?password=s3cret-pw",
    ],
)
def test_init_never_stores_a_database_password(tmp_path: Path, url: str) -> None:
    target = tmp_path / "ws"
    with pytest.raises(ComplaiError) as err:
        Workspace.init(target, database_url=url)
    assert "s3cret" not in str(err.value) and "PGPASSWORD" in str(err.value)
    assert not target.exists()
    r = subprocess.run(
        [sys.executable, "-m", "complai.cli.main", "init", "--workspace", str(target), "--database-url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "s3cret" not in r.stdout + r.stderr and r.stderr.count("\n") == 1
    assert not target.exists()


def test_workspace_directory_and_database_are_private(tmp_path: Path) -> None:
    target = tmp_path / "ws"
    w = Workspace.init(target)
    try:
        w.ledger.checkpoint()  # a write: SQLite in WAL mode keeps its -wal and -shm files open
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        for name in ("complai.db", "complai.db-wal", "complai.db-shm"):
            f = target / name
            if f.exists():
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, name
        assert (target / "complai.db").exists()
    finally:
        w.close()
    os.chmod(target / "complai.db", 0o644)  # a workspace from before: tightened when opened
    Workspace.open(target).close()
    assert stat.S_IMODE((target / "complai.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["deid file", "deid table"])
def test_a_deid_output_that_cannot_be_written_records_nothing(
    env: dict[str, Path | str], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import complai.files

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ws = Path(env["ws"])
    before = ledger_size(ws)
    monkeypatch.setattr(complai.files.os, "fsync", full)  # the disk fills as the output is flushed
    assert cli(ws, *_output(env, name).argv(tmp_path / "out")) == 2
    monkeypatch.undo()
    assert ledger_size(ws) == before
    assert list(tmp_path.iterdir()) == []
