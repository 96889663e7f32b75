"""Vault commands: datasets, subjects and their rights, consent, keys, retention, backups."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from complai.app.workspace import Workspace
from complai.cli.common import (
    ForceOpt,
    console,
    err_console,
    open_session,
    print_json,
    progress,
    protected_paths,
    table,
)
from complai.cli.options import (
    BasisOpt,
    BatchSizeOpt,
    CollectionPurposeOpt,
    ConsentGrantPurposeOpt,
    ConsentsOpt,
    ConsentWithdrawPurposeOpt,
    DataFormatOpt,
    DatasetAlterNameArg,
    DatasetAlterSchemaOpt,
    DatasetCreateNameArg,
    DatasetDropNameArg,
    DatasetShowNameArg,
    DelimiterOpt,
    DryRunOpt,
    EncodingOpt,
    FieldOpt,
    IngestDataArg,
    IngestModeOpt,
    IngestNameArg,
    JsonOpt,
    LiftOpt,
    MapOpt,
    NoticeVersionOpt,
    OptOutOpt,
    ReasonOpt,
    SchemaOpt,
    SourceOpt,
    SubjectArg,
    SubjectColumnOpt,
    SubjectExportOutOpt,
    SubjectObjectPurposeOpt,
    SubjectRectifyDatasetOpt,
    ValueOpt,
    YesOpt,
    print_dataset,
    print_key_status,
)
from complai.cli.output import print_datasets
from complai.errors import InvalidInput
from complai.files import check_output, write_private
from complai.inputs import bounded_int
from complai.vault.backup import load_backup_key
from complai.vault.ingest import MODES
from complai.vault.sources import FORMATS, SourceOptions, parse_mapping

dataset_app = typer.Typer(help="Datasets: schemas, ingest, listing.", no_args_is_help=True)
subject_app = typer.Typer(help="Data subjects: export, erase, rectify, restrict, object.", no_args_is_help=True)
consent_app = typer.Typer(help="Consent records per subject and purpose.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys: status and rotation.", no_args_is_help=True)
retention_app = typer.Typer(help="Retention: delete what is past its dataset's retention.", no_args_is_help=True)
backup_app = typer.Typer(help="Encrypted backups and restores.", no_args_is_help=True)


# --- datasets ------------------------------------------------------------------------------------


@dataset_app.command("create")
def dataset_create(
    name: DatasetCreateNameArg,
    schema: SchemaOpt,
    json_out: JsonOpt = False,
) -> None:
    """Register a dataset from a schema file."""
    with open_session("administration") as (_, session):
        spec = session.parse_schema(schema)
        if spec.name != name:
            raise InvalidInput(f"the schema names dataset {spec.name!r}, not {name!r}")
        session.create_dataset(spec)
    if json_out:
        print_json({"dataset": name, "fields": len(spec.fields), "purposes": spec.purposes})
    else:
        console.print(f"dataset [bold]{name}[/] registered: {len(spec.fields)} fields, purposes {list(spec.purposes)}")


class _Rate(ProgressColumn):
    """Throughput of a task in its own unit (`unit` field): rows/s, or bytes/s as MB/s."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("", style="progress.data.speed")
        if task.fields.get("unit") == "bytes":
            return Text(f"{speed / 1e6:,.1f} MB/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} {task.fields.get('unit', 'rows')}/s", style="progress.data.speed")


def counted_progress(disable: bool = False) -> Progress:
    """A progress bar with a total, the count done and the rate (rows/s or MB/s)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} {task.fields[unit]}"),
        _Rate(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=disable or not err_console.is_terminal,
    )


@dataset_app.command("ingest")
def dataset_ingest(
    name: IngestNameArg,
    data: IngestDataArg,
    subject_column: SubjectColumnOpt = None,
    consents: ConsentsOpt = None,
    purpose: CollectionPurposeOpt = "administration",
    mode: IngestModeOpt = "insert",
    data_format: DataFormatOpt = None,
    delimiter: DelimiterOpt = ",",
    encoding: EncodingOpt = "utf-8",
    mapping: MapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Encrypt and store a file's rows, read in chunks (all or nothing; every bad row is reported)."""
    if mode not in MODES:
        raise InvalidInput(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if data_format is not None and data_format not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}, not {data_format!r}")
    renames = parse_mapping(mapping or [])
    with open_session(purpose) as (_, session):
        spec = session.dataset_schema(name, "ingest")
        if subject_column and subject_column != spec.subject_column:
            if subject_column in renames:
                raise InvalidInput(f"--subject-column {subject_column!r} is also given to --map")
            renames[subject_column] = spec.subject_column
        options = SourceOptions(
            format=data_format,  # checked against FORMATS above
            delimiter=delimiter,
            encoding=encoding,
            mapping=renames,
        )
        with counted_progress(disable=json_out) as bar:
            tasks: dict[str, TaskID] = {}

            def told(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    unit = "bytes" if stage == "checking" else "rows"
                    label = f"checking {data.name}" if stage == "checking" else "encrypting and storing"
                    tasks[stage] = bar.add_task(label, total=total, unit=unit)
                bar.update(tasks[stage], completed=done, total=total)

            result = session.ingest(name, data, consents, mode=mode, options=options, progress=told)
    out = result.__dict__
    if json_out:
        print_json(out)
    else:
        changes = []
        if result.updated:
            changes.append(f"{result.updated:,} replaced stored records")
        if result.deleted:
            changes.append(f"{result.deleted:,} stored records deleted")
        if result.skipped_existing_rows:
            changes.append(f"skipped {result.skipped_existing_rows:,} rows whose record is stored already")
        if result.skipped_erased_rows:
            changes.append(f"skipped {result.skipped_erased_rows} rows of erased subjects")
        console.print(
            f"ingested {result.rows:,} rows for {result.subjects:,} subjects ({result.new_subjects:,} new) "
            f"and {result.consents:,} consent records into [bold]{name}[/] (mode {mode})"
            + ("; " + "; ".join(changes) if changes else "")
        )


@dataset_app.command("list")
def dataset_list(json_out: JsonOpt = False) -> None:
    """The datasets the caller may act on (exact counts only for those who may see exact data)."""
    with open_session("administration") as (_, session):
        rows = [
            {
                "dataset": d["name"],
                "records": d.get("records"),
                "subjects": d.get("subjects"),
                "purposes": list(d["purposes"]),
                "retention": d["retention"],
                "jurisdiction": d["jurisdiction"],
            }
            for d in session.describe_datasets()
        ]
    print_datasets(rows, json_out)


@dataset_app.command("show")
def dataset_show(name: DatasetShowNameArg, json_out: JsonOpt = False) -> None:
    """A dataset's schema (and, for those who may see exact data, its record and subject counts)."""
    with open_session("administration") as (_, session):
        (doc,) = session.describe_datasets(name)
    print_dataset(name, doc, json_out)


def _interactive() -> bool:
    """Whether a person can answer a confirmation prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


def _show_changes(changes: dict[str, list[str]]) -> None:
    t = table("change", "what")
    for kind, items in changes.items():
        for item in items:
            t.add_row(kind, item)
    console.print(t)


@dataset_app.command("alter")
def dataset_alter(
    name: DatasetAlterNameArg,
    schema: DatasetAlterSchemaOpt,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Change a dataset's schema to a new version: prints what changed (fields added, bounds widened or
    narrowed, values, categories, purposes, retention). A narrowing change is checked against every stored
    record and refused with the number of records that do not fit."""
    with open_session("administration") as (_, session), progress(disable=json_out) as bar:
        task = bar.add_task("checking stored records", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = session.alter_dataset(name, schema, dry_run=dry_run, progress=tick)
    out = {
        "dataset": result.dataset,
        "dry_run": result.dry_run,
        "from_version": result.from_version,
        "version": result.version,
        "from_schema_digest": result.from_schema_digest,
        "schema_digest": result.schema_digest,
        "changes": result.changes,
        "records_checked": result.records_checked,
        "notes": result.notes,
        "ledger_seq": result.seq,
    }
    if json_out:
        print_json(out)
        return
    _show_changes(result.changes)
    for note in result.notes:
        console.print(f"note: {note}")
    if dry_run:
        console.print(
            f"dry run: [bold]{escape(name)}[/] would become schema version {result.version} "
            f"({result.records_checked:,} stored records checked); nothing changed"
        )
    else:
        console.print(
            f"dataset [bold]{escape(name)}[/] is now at schema version {result.version} "
            f"({result.records_checked:,} stored records checked; ledger entry {result.seq})"
        )


@dataset_app.command("drop")
def dataset_drop(
    name: DatasetDropNameArg,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Drop a dataset: delete every record, crypto-shred the subjects left without records in any other
    dataset (as an erasure does); its name stays taken. Asks to type the name unless --yes."""
    if not yes:
        if not _interactive():
            raise InvalidInput(f"dropping {name} erases its records for good: pass --yes to confirm without a prompt")
        typed = typer.prompt(f"This erases every record of {name} for good. Type the dataset's name to confirm")
        if typed != name:
            raise InvalidInput("the name typed does not match; nothing was dropped")
    with open_session("administration") as (_, session):
        result = session.drop_dataset(name)
    out = {
        "dataset": result.dataset,
        "records_deleted": result.records,
        "subjects": result.subjects,
        "subjects_shredded": result.subjects_shredded,
        "subjects_kept": result.subjects_kept,
        "keys_destroyed": result.keys_destroyed,
        "ledger_seq": result.seq,
    }
    if json_out:
        print_json(out)
        return
    console.print(
        f"dataset [bold]{escape(name)}[/] dropped: {result.records:,} records deleted; {result.subjects_shredded:,} "
        f"subjects crypto-shredded ({result.keys_destroyed:,} data keys destroyed); {result.subjects_kept:,} "
        f"subjects keep their key for their records in other datasets (ledger entry {result.seq})"
    )


# --- subjects ------------------------------------------------------------------------------------


@subject_app.command("export")
def subject_export(
    subject: SubjectArg,
    out: SubjectExportOutOpt = None,
    force: ForceOpt = False,
) -> None:
    """Everything held about a subject, as JSON (access / portability); the file is mode 0600."""
    if out:
        check_output(out, force=force, forbidden=protected_paths())
    with open_session("subject_request") as (_, session):
        doc = session.export_subject(subject)
    text = json.dumps(doc, indent=2, sort_keys=True)
    if out:
        write_private(out, text + "\n", force=force, forbidden=protected_paths())
        err_console.print(f"wrote {out}")
    else:
        console.file.write(text + "\n")


@subject_app.command("erase")
def subject_erase(subject: SubjectArg, json_out: JsonOpt = False) -> None:
    """Erase a subject: records and consents deleted, data keys destroyed, tombstone in the ledger."""
    with open_session("subject_request") as (_, session):
        seq = session.erase_subject(subject)
    if json_out:
        print_json({"erased": True, "ledger_seq": seq})
    else:
        console.print(f"subject erased (ledger entry {seq})")


@subject_app.command("rectify")
def subject_rectify(
    subject: SubjectArg,
    dataset: SubjectRectifyDatasetOpt,
    field: FieldOpt,
    value: ValueOpt,
) -> None:
    """Correct one field in a subject's records."""
    with open_session("subject_request") as (_, session):
        seq = session.rectify(subject, dataset, field, value)
    console.print(f"rectified {field} in {dataset} (ledger entry {seq})")


@subject_app.command("restrict")
def subject_restrict(
    subject: SubjectArg,
    reason: ReasonOpt = "",
    lift: LiftOpt = False,
) -> None:
    """Restrict processing of a subject (or lift the restriction)."""
    with open_session("subject_request") as (_, session):
        seq = session.restrict(subject, reason=reason, lift=lift)
    console.print(f"restriction {'lifted' if lift else 'recorded'} (ledger entry {seq})")


@subject_app.command("object")
def subject_object(
    subject: SubjectArg,
    purpose: SubjectObjectPurposeOpt,
    opt_out: OptOutOpt = False,
) -> None:
    """Record a subject's objection (or opt-out) to processing for a purpose."""
    with open_session("subject_request") as (_, session):
        seq = session.object(subject, purpose, kind="opt_out" if opt_out else "objection")
    console.print(f"{'opt-out' if opt_out else 'objection'} recorded (ledger entry {seq})")


# --- consent -------------------------------------------------------------------------------------


@consent_app.command("grant")
def consent_grant(
    subject: SubjectArg,
    purpose: ConsentGrantPurposeOpt,
    basis: BasisOpt = "gdpr.consent",
    notice_version: NoticeVersionOpt = "unspecified",
    source: SourceOpt = "cli",
) -> None:
    """Record a subject's consent for a purpose."""
    with open_session("administration") as (_, session):
        seq = session.grant_consent(subject, purpose, basis=basis, notice_version=notice_version, source=source)
    console.print(f"consent for {purpose} recorded (ledger entry {seq})")


@consent_app.command("withdraw")
def consent_withdraw(
    subject: SubjectArg,
    purpose: ConsentWithdrawPurposeOpt,
) -> None:
    """Withdraw a subject's consent for a purpose; reads for it stop including the subject."""
    with open_session("administration") as (_, session):
        seq = session.withdraw_consent(subject, purpose)
    console.print(f"consent for {purpose} withdrawn (ledger entry {seq})")


# --- keys ----------------------------------------------------------------------------------------


@keys_app.command("status")
def keys_status(json_out: JsonOpt = False) -> None:
    """Show the key-encryption key versions and the state of any rotation."""
    with open_session("security") as (_, session):
        st = session.key_status()
    print_key_status(st, json_out)


@keys_app.command("rotate")
def keys_rotate(
    batch_size: BatchSizeOpt = 2000,
    json_out: JsonOpt = False,
) -> None:
    """New key-encryption key; re-wrap every data key (resumes an interrupted rotation)."""
    bounded_int(batch_size, "--batch-size", lo=1, hi=1_000_000)
    with open_session("security") as (_, session):
        with progress(disable=json_out) as bar:
            task = bar.add_task("re-wrapping data keys", total=None)
            result = session.rotate_keys(
                batch_size=batch_size, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    if json_out:
        print_json(result)
    else:
        console.print(
            f"{'resumed rotation to' if result['resumed'] else 'rotated to'} KEK version {result['to_version']}: "
            f"{result['deks_rewrapped']:,} data keys re-wrapped, retired versions {result['retired'] or 'none'}"
        )


# --- retention -----------------------------------------------------------------------------------


@retention_app.command("sweep")
def retention_sweep(json_out: JsonOpt = False) -> None:
    """Delete records past retention; crypto-shred subjects left with nothing (idempotent)."""
    with open_session("legal_obligation") as (_, session):
        result = session.retention_sweep()
    if json_out:
        print_json(result)
    else:
        console.print(
            f"deleted {result['records_deleted']:,} expired records; {result['subjects_shredded']:,} subjects shredded"
        )


# --- backups -------------------------------------------------------------------------------------


@backup_app.command("create")
def backup_create(
    file: Annotated[Path, typer.Argument(help="Backup file to write.")],
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Backup key (default: keys/backup.key, created if missing).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Consistent, encrypted snapshot of the workspace with a manifest and its ledger checkpoint."""
    with open_session("security") as (_, session):
        with progress(disable=json_out) as bar:
            task = bar.add_task("backing up", total=None)
            result, created = session.backup_with_key_file(
                file, key_file, progress=lambda t: bar.update(task, description=f"table {t}")
            )
        if created:
            err_console.print(f"created backup key {created}: keep a copy apart from the backups")
    if json_out:
        print_json(result)
    else:
        console.print(f"backup written to {file} ({result['digest'][:23]}...), ledger size {result['ledger_size']}")


@backup_app.command("restore")
def backup_restore(
    file: Annotated[Path, typer.Argument(help="Backup file.")],
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="New directory to restore into.")],
    key_file: Annotated[Path, typer.Option("--key-file", help="The backup key.")],
    ledger_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--ledger-from",
            help="Newer ledger (workspace or export) whose erasures are re-applied; repeat for several. "
            "The live workspace the backup came from is always consulted when it is still there.",
        ),
    ] = None,
    accept_stale: Annotated[
        bool,
        typer.Option(
            "--accept-stale",
            help="Restore even when no newer ledger can be consulted (erasures made after the backup come back).",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="The new workspace's database URL (default: SQLite in it)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a backup, restore it into a new workspace, re-apply later erasures from every newer ledger."""
    with progress(disable=json_out) as bar:
        bar.add_task("verifying and restoring", total=None)
        result = Workspace.restore_backup(
            file,
            workspace,
            load_backup_key(key_file),
            ledger_from=ledger_from or None,
            database_url=database_url,
            accept_stale=accept_stale,
        )
    if json_out:
        print_json(result)
    else:
        console.print(
            f"restored into {workspace}; {result['erasures_reapplied']} later erasure(s) re-applied"
            + (f" from {len(result['later_ledgers'])} newer ledger(s)" if result["later_ledger_checked"] else "")
        )
        if not result["later_ledger_checked"]:
            err_console.print(
                "[red]warning:[/] no newer ledger was consulted: subjects erased after this backup are back "
                "in the restored workspace; erase them again before using it"
            )
