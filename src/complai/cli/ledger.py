"""`complai ledger ...`: status, checkpoints, witnesses, verification, proofs and export."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from complai.cli.common import console, err_console, open_session, print_json, progress, protected_paths
from complai.crypto.signing import VerifierKey
from complai.errors import InvalidInput, NotFound
from complai.inputs import bounded_int
from complai.ledger.verify import VerifyReport, export_ledger, verify_export, verify_ledger
from complai.ledger.witness import Witness

app = typer.Typer(help="The verifiable ledger (Merkle transparency log).", no_args_is_help=True)
witness_app = typer.Typer(help="Witnesses that cosign checkpoints.", no_args_is_help=True)
app.add_typer(witness_app, name="witness")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
QuorumOpt = Annotated[int, typer.Option("--witnesses", min=0, help="Cosignatures required on the latest checkpoint.")]


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Size, root, latest checkpoint, witnesses and entries per event type."""
    with open_session("audit") as (ws, session):
        session.audit_access()
        head = ws.ledger.head()
        latest = ws.ledger.latest_checkpoint()
        witnesses = ws.ledger.witnesses()
        kinds = ws.ledger.count_by_kind()
    out = {
        "origin": ws.ledger.origin,
        "size": head.size,
        "root": head.root.hex(),
        "log_key": ws.ledger.verifier.encode(),
        "latest_checkpoint": latest.checkpoint.size if latest else None,
        "witnesses": [w.name for w in witnesses],
        "entries_by_type": kinds,
    }
    if json_out:
        print_json(out)
        return
    t = Table(show_header=False, box=None)
    for k in ("origin", "size", "root", "log_key", "latest_checkpoint"):
        t.add_row(k.replace("_", " "), str(out[k]))
    t.add_row("witnesses", ", ".join(out["witnesses"]) or "none")  # type: ignore[arg-type]
    console.print(t)
    if kinds:
        k = Table("event type", "entries")
        for name, n in sorted(kinds.items()):
            k.add_row(name, str(n))
        console.print(k)


@app.command()
def checkpoint(json_out: JsonOpt = False) -> None:
    """Sign the current tree head as a checkpoint (C2SP signed note)."""
    with open_session("audit") as (ws, session):
        session.audit_access()
        note = ws.ledger.checkpoint(session.principal)
    if json_out:
        print_json({"size": note.checkpoint.size, "root": note.checkpoint.root.hex(), "note": note.text()})
    else:
        console.print(note.text(), end="")


def _show_report(report: VerifyReport, json_out: bool) -> None:
    if json_out:
        print_json(report.as_dict())
    elif report.ok:
        console.print(
            f"[green]ledger intact[/]: {report.size} entries, root {report.root[:16]}..., "
            f"{report.checkpoints} checkpoint(s) checked, {report.witnessed} witnessed"
        )
        for n in report.notes:
            console.print(f"note: {n}")
    else:
        err_console.print(f"[red]ledger verification failed[/]: {report.problem}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def verify(quorum: QuorumOpt = 0, json_out: JsonOpt = False) -> None:
    """Recompute the whole tree and check every checkpoint; exit 1 naming the first inconsistency."""
    with open_session("audit") as (ws, session):
        session.audit_access()
        total = ws.ledger.head().size
        with progress(disable=json_out) as bar:
            task = bar.add_task("verifying", total=total)
            report = verify_ledger(ws.ledger, quorum, progress=lambda n: bar.update(task, completed=n))
    _show_report(report, json_out)


@app.command()
def prove(
    seq: Annotated[int, typer.Argument(help="Sequence number of the entry.")],
    size: Annotated[int | None, typer.Option("--size", help="Tree size to prove against.")] = None,
) -> None:
    """Print a JSON inclusion proof for one entry, with the signed checkpoint it leads to."""
    bounded_int(seq, "the sequence number")
    if size is not None:
        bounded_int(size, "--size", lo=1)
    with open_session("audit") as (ws, session):
        session.audit_access()
        entry = ws.ledger.entry(seq)
        note = None
        if size is None:
            latest = ws.ledger.latest_checkpoint()
            note = latest if latest and latest.checkpoint.size > seq else ws.ledger.checkpoint(session.principal)
            size = note.checkpoint.size
        else:
            for n in ws.ledger.checkpoints():
                if n.checkpoint.size == size:
                    note = n
        if seq >= size:
            raise InvalidInput(f"entry {seq} is not in the tree of size {size}")
        proof = ws.ledger.inclusion_proof(seq, size)
        root = ws.ledger.root_at(size)
    print_json(
        {
            "seq": seq,
            "tree_size": size,
            "leaf_hash": entry.leaf_hash.hex(),
            "entry": entry.data.decode(),
            "proof": [p.hex() for p in proof],
            "root": root.hex(),
            "checkpoint": note.text() if note else None,
            "log_key": ws.ledger.verifier.encode(),
        }
    )


@app.command()
def show(
    type_: Annotated[str | None, typer.Option("--type", help="Only entries of this event type.")] = None,
    start: Annotated[int, typer.Option("--from", help="First sequence number.")] = 0,
    limit: Annotated[int, typer.Option("--limit", help="At most this many entries.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List ledger entries."""
    bounded_int(start, "--from")
    bounded_int(limit, "--limit", lo=1)
    rows = []
    with open_session("audit") as (ws, session):
        session.audit_access()
        for e in ws.ledger.entries(start=start, kind=type_, chunk=min(limit, 5000)):
            rows.append(e)
            if len(rows) >= limit:
                break
    if json_out:
        print_json([{"seq": e.seq, "type": e.kind, "event": json.loads(e.data)} for e in rows])
        return
    t = Table("seq", "type", "time", "actor", "purpose", "details")
    for e in rows:
        ev = json.loads(e.data)
        details = {k: v for k, v in ev.items() if k not in ("type", "v", "time", "actor", "purpose")}
        t.add_row(
            str(e.seq),
            e.kind,
            ev.get("time", ""),
            ev.get("actor", ""),
            ev.get("purpose", ""),
            json.dumps(details, sort_keys=True)[:80],
        )
    console.print(t)


@app.command()
def export(directory: Annotated[Path, typer.Argument(help="Empty or new directory.")]) -> None:
    """Export entries, checkpoints and public keys for an outside auditor."""
    from complai.files import check_output_dir

    protected = protected_paths()
    check_output_dir(directory, forbidden=protected)
    with open_session("audit") as (ws, session):
        session.audit_access()
        # sign the head first, so that the export is signed up to its end (all but the checkpoint's own
        # entry): what it shows cannot be cut short or edited without breaking a signature
        ws.ledger.checkpoint(session.principal)
        total = ws.ledger.head().size
        with progress() as bar:
            task = bar.add_task("exporting", total=total)
            manifest = export_ledger(
                ws.ledger, directory, progress=lambda n: bar.update(task, completed=n), forbidden=protected
            )
    console.print(f"exported {manifest['size']} entries and {manifest['checkpoints']} checkpoint(s) to {directory}")


@app.command("verify-export")
def verify_export_cmd(
    directory: Annotated[Path, typer.Argument(help="A directory written by `complai ledger export`.")],
    quorum: QuorumOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Verify an exported ledger offline, with nothing but its files."""
    _show_report(verify_export(directory, quorum), json_out)


@witness_app.command("init")
def witness_init(
    directory: Annotated[Path, typer.Argument(help="Directory for the witness's key and state.")],
    name: Annotated[str, typer.Option("--name", help="Witness name, e.g. witness.example.org/w1.")],
) -> None:
    """Create a witness (its own key and state) and print its verifier key."""
    from complai.files import check_output_dir

    check_output_dir(directory, forbidden=protected_paths())
    w = Witness.init(directory, name)
    console.print(w.verifier.encode())


@witness_app.command("add")
def witness_add(vkey: Annotated[str, typer.Argument(help="The witness's verifier key.")]) -> None:
    """Trust a witness: its cosignatures count toward --witnesses."""
    key = VerifierKey.parse(vkey)
    with open_session("security") as (_, session):
        session.trust_witness(key)
    console.print(f"trusting witness {key.name}")


@witness_app.command("list")
def witness_list(json_out: JsonOpt = False) -> None:
    with open_session("audit") as (ws, session):
        session.audit_access()
        keys = ws.ledger.witnesses()
    if json_out:
        print_json([k.encode() for k in keys])
    else:
        for k in keys:
            console.print(k.encode())


@witness_app.command("cosign")
def witness_cosign(
    directory: Annotated[Path, typer.Argument(help="The witness's directory.")],
) -> None:
    """Have the witness at DIRECTORY check and cosign this workspace's latest checkpoint."""
    from complai.ledger.witness import cosign_latest

    w = Witness(directory)
    with open_session("audit") as (ws, session):
        session.audit_access()
        done = cosign_latest(ws.ledger, w, ws.clock.now(), int(time.time()))
        if done is None:
            raise NotFound("no checkpoint to cosign; run `complai ledger checkpoint` first")
        size, line = done
        trusted = {k.name: k for k in ws.ledger.witnesses()}
        if w.name in trusted and trusted[w.name] == w.verifier:
            console.print(f"{w.name} cosigned checkpoint {size}")
        else:
            console.print(f"{w.name} cosigned checkpoint {size} (not stored: witness not trusted here)")
            console.print(line, end="")
