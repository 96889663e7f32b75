"""`complai ledger ...`: status, checkpoints, witnesses, verification, proofs and export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from complai.cli.common import (
    console,
    err_console,
    open_session,
    print_exact,
    print_json,
    progress,
    protected_paths,
    table,
)
from complai.crypto.signing import VerifierKey
from complai.errors import NotFound
from complai.files import check_output_dir
from complai.inputs import bounded_int
from complai.ledger.verify import VerifyReport, verify_export
from complai.ledger.witness import Witness

app = typer.Typer(help="The verifiable ledger (Merkle transparency log).", no_args_is_help=True)
witness_app = typer.Typer(help="Witnesses that cosign checkpoints.", no_args_is_help=True)
app.add_typer(witness_app, name="witness")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
QuorumOpt = Annotated[int, typer.Option("--witnesses", min=0, help="Cosignatures required on the latest checkpoint.")]


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Size, root, latest checkpoint, witnesses and entries per event type."""
    with open_session("audit") as (_, session):
        st = session.ledger_status()
    out = st.as_dict()
    if json_out:
        print_json(out)
        return
    t = table(show_header=False, box=None, columns=2)
    for key in ("origin", "size", "root", "log_key", "latest_checkpoint"):
        t.add_row(key.replace("_", " "), str(out[key]))
    t.add_row("witnesses", ", ".join(w.name for w in st.witnesses) or "none")
    console.print(t)
    if st.entries_by_type:
        by_type = table("event type", "entries")
        for name, n in sorted(st.entries_by_type.items()):
            by_type.add_row(name, str(n))
        console.print(by_type)


@app.command()
def checkpoint(json_out: JsonOpt = False) -> None:
    """Sign the current tree head as a checkpoint (C2SP signed note)."""
    with open_session("audit") as (_, session):
        note = session.ledger_checkpoint()
    if json_out:
        print_json({"size": note.checkpoint.size, "root": note.checkpoint.root.hex(), "note": note.text()})
    else:
        print_exact(note.text())


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
    with open_session("audit") as (_, session), progress(disable=json_out) as bar:
        task = bar.add_task("verifying", total=None)
        report = session.ledger_verify(quorum, progress=lambda n, total: bar.update(task, completed=n, total=total))
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
    with open_session("audit") as (_, session):
        proof = session.ledger_prove(seq, size)
    print_json(proof.as_dict())


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
    with open_session("audit") as (_, session):
        rows = session.ledger_entries(start=start, kind=type_, limit=limit)
    if json_out:
        print_json([{"seq": e.seq, "type": e.kind, "event": json.loads(e.data)} for e in rows])
        return
    t = table("seq", "type", "time", "actor", "purpose", "details")
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
    protected = protected_paths()
    check_output_dir(directory, forbidden=protected)
    with open_session("audit") as (_, session), progress() as bar:
        task = bar.add_task("exporting", total=None)
        manifest = session.ledger_export(
            directory, forbidden=protected, progress=lambda n, total: bar.update(task, completed=n, total=total)
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
    check_output_dir(directory, forbidden=protected_paths())
    w = Witness.init(directory, name)
    print_exact(w.verifier.encode())


@witness_app.command("add")
def witness_add(vkey: Annotated[str, typer.Argument(help="The witness's verifier key.")]) -> None:
    """Trust a witness: its cosignatures count toward --witnesses."""
    key = VerifierKey.parse(vkey)
    with open_session("security") as (_, session):
        session.trust_witness(key)
    console.print(f"trusting witness {key.name}")


@witness_app.command("list")
def witness_list(json_out: JsonOpt = False) -> None:
    """List the verifier keys of the witnesses trusted to cosign checkpoints."""
    with open_session("audit") as (_, session):
        keys = session.ledger_witnesses()
    if json_out:
        print_json([k.encode() for k in keys])
    else:
        for k in keys:
            print_exact(k.encode())


@witness_app.command("cosign")
def witness_cosign(
    directory: Annotated[Path, typer.Argument(help="The witness's directory.")],
) -> None:
    """Have the witness at DIRECTORY check and cosign this workspace's latest checkpoint."""
    w = Witness(directory)
    with open_session("audit") as (_, session):
        done = session.witness_cosign(w)
    if done is None:
        raise NotFound("no checkpoint to cosign; run `complai ledger checkpoint` first")
    if done.stored:
        console.print(f"{w.name} cosigned checkpoint {done.size}")
    else:
        console.print(f"{w.name} cosigned checkpoint {done.size} (not stored: witness not trusted here)")
        print_exact(done.line)
