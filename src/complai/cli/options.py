"""Options, arguments and printers that a command's local form and its remote form (`complai --server`)
share, declared once so that both forms take and print the same. Loads no front door: only typer,
rich and the CLI's output and state modules (the remote CLI imports it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from complai.cli.output import print_json, table
from complai.cli.state import console
from complai.errors import InvalidInput

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SubjectArg = Annotated[str, typer.Argument(help="The subject's external id.")]
RoleArg = Annotated[str, typer.Argument(help="owner, admin, auditor, analyst or steward.")]
RolePrincipalOpt = Annotated[str, typer.Option("--principal", help="The principal whose roles change.")]
RuleSubjectArg = Annotated[str, typer.Argument(help="A principal, or role:NAME.")]
RuleDatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset or pattern (credit_*, *).")]
RuleActionOpt = Annotated[
    str, typer.Option("--action", help="read, ingest, query_dp, train, export, erase, share, audit, admin, *")
]
RulePurposeOpt = Annotated[str, typer.Option("--purpose", help="A purpose from the taxonomy, or *.")]
RidArg = Annotated[str, typer.Argument(help="The request's id.")]
IncidentArg = Annotated[str, typer.Argument(help="The incident's id.")]
DpiaDatasetArg = Annotated[str, typer.Argument(help="The dataset the DPIA assesses.")]

# --- dataset ingest ------------------------------------------------------------------------------

IngestNameArg = Annotated[str, typer.Argument(help="Dataset name.")]
IngestDataArg = Annotated[Path, typer.Argument(help="Data file: CSV with a header row, JSON Lines or Parquet.")]
SubjectColumnOpt = Annotated[
    str | None, typer.Option("--subject-column", help="Column holding the subject id (default: the schema's).")
]
ConsentsOpt = Annotated[Path | None, typer.Option("--consents", help="Consents CSV (subject, purpose, ...).")]
CollectionPurposeOpt = Annotated[str, typer.Option("--purpose", help="Purpose of the collection.")]
IngestModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="What becomes of rows whose record is stored already (by the schema's record_key, or subject and "
        "values): insert refuses them (nothing is stored), append skips them, upsert replaces those records "
        "(needs a record_key), replace deletes the dataset's records and stores the file's.",
    ),
]
DataFormatOpt = Annotated[
    str | None, typer.Option("--format", help="csv, jsonl or parquet (default: by the file's extension).")
]
DelimiterOpt = Annotated[str, typer.Option("--delimiter", help="CSV field delimiter (one character; \\t for tab).")]
EncodingOpt = Annotated[
    str, typer.Option("--encoding", help="Text encoding of a CSV or JSON Lines file (e.g. latin-1).")
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", help="Rename a column of the file to a schema field: source=field (repeatable)."),
]

# --- vault / remote_data -----------------------------------------------------------------------

DatasetCreateNameArg = Annotated[str, typer.Argument(help="Dataset name (must match the schema's name).")]
SchemaOpt = Annotated[Path, typer.Option("--schema", help="Schema YAML file.")]
DatasetShowNameArg = Annotated[str, typer.Argument(help="The dataset's name.")]
DatasetAlterNameArg = Annotated[str, typer.Argument(help="Dataset name (must match the new schema's name).")]
DatasetAlterSchemaOpt = Annotated[Path, typer.Option("--schema", help="The dataset's full new schema (YAML).")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Check the change against every stored record; change nothing.")
]
DatasetDropNameArg = Annotated[str, typer.Argument(help="Dataset name.")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Drop without asking to type the dataset's name.")]

# --- vault / remote_admin ----------------------------------------------------------------------

SubjectExportOutOpt = Annotated[Path | None, typer.Option("--out", help="Write the JSON here (default: stdout).")]
SubjectRectifyDatasetOpt = Annotated[str, typer.Option("--dataset", help="The dataset holding the field.")]
FieldOpt = Annotated[str, typer.Option("--field", help="The field to correct.")]
ValueOpt = Annotated[str, typer.Option("--value", help="Its correct value (checked against the schema).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why processing is restricted (recorded).")]
LiftOpt = Annotated[bool, typer.Option("--lift", help="Lift an existing restriction.")]
SubjectObjectPurposeOpt = Annotated[str, typer.Option("--purpose", help="Purpose objected to, or '*' for all.")]
OptOutOpt = Annotated[bool, typer.Option("--opt-out", help="A CCPA opt-out rather than a GDPR objection.")]
ConsentGrantPurposeOpt = Annotated[str, typer.Option("--purpose", help="The purpose consented to.")]
BasisOpt = Annotated[str, typer.Option("--basis", help="Lawful basis key.")]
NoticeVersionOpt = Annotated[str, typer.Option("--notice-version", help="The privacy notice the subject was shown.")]
SourceOpt = Annotated[str, typer.Option("--source", help="Where the consent was collected.")]
ConsentWithdrawPurposeOpt = Annotated[str, typer.Option("--purpose", help="The purpose consent is withdrawn for.")]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", help="Data keys re-wrapped per transaction (1 to 1,000,000).")
]

# --- models / remote_data ----------------------------------------------------------------------

SpecFileArg = Annotated[Path, typer.Argument(help="Training spec (YAML): dataset, label, model, target_epsilon...")]
TrainPurposeOpt = Annotated[str | None, typer.Option("--purpose", help="Overrides the spec's purpose.")]
CardJsonOpt = Annotated[bool, typer.Option("--json", help="Print the model card as JSON.")]
CardFormatOpt = Annotated[str, typer.Option("--format", help="md or json")]
ShadowsOpt = Annotated[int, typer.Option("--shadows", min=0, max=256, help="LiRA shadow models (0: loss only).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the shadow models' sampling and training.")]

# --- dp / remote -------------------------------------------------------------------------------

QueryDatasetArg = Annotated[str, typer.Argument(help="The dataset the query reads (its FROM).")]
SqlArg = Annotated[str, typer.Argument(help='e.g. "SELECT COUNT(*), AVG(age) FROM adult WHERE age > 30"')]
EpsilonOpt = Annotated[float, typer.Option("--epsilon", help="Privacy cost of the whole query.")]
QueryPurposeOpt = Annotated[str, typer.Option("--purpose", help="Why the data is queried (a purpose of the dataset).")]
DeltaOpt = Annotated[float | None, typer.Option("--delta", help="With a delta: Gaussian noise (zCDP).")]
MaxRowsOpt = Annotated[int, typer.Option("--max-rows", min=1, help="Rows each subject may contribute.")]
SelectionDeltaOpt = Annotated[
    float | None,
    typer.Option(
        "--selection-delta",
        help="The part of --delta spent selecting GROUP BY keys without declared values (default: half of it).",
    ),
]

# --- dp / remote_data --------------------------------------------------------------------------

BudgetDatasetArg = Annotated[str, typer.Argument(help="The dataset whose budgets to show or set.")]
SetOpt = Annotated[
    tuple[float, float] | None, typer.Option("--set", help="EPSILON DELTA: the total budget.", show_default=False)
]
PrincipalOpt = Annotated[str, typer.Option("--principal", help="A principal's own budget on the dataset.")]

# --- access / remote_records -------------------------------------------------------------------

PrincipalDisableNameArg = Annotated[str, typer.Argument(help="The principal to disable.")]
TokenCreatePrincipalOpt = Annotated[str, typer.Option("--principal", help="Whose token (default: yourself).")]
TokenExpiresOpt = Annotated[str, typer.Option("--expires", help="ISO 8601 duration, or 'never'.")]
TokenListPrincipalOpt = Annotated[
    str | None,
    typer.Option("--principal", help="Whose tokens (default: yours; another's needs owner, or admin for non-owners)."),
]
EveryoneOpt = Annotated[bool, typer.Option("--all", help="Every principal's tokens (owner only).")]
TokenIdArg = Annotated[str, typer.Argument(help="The token's id (not the token).")]
DurationArg = Annotated[
    str | None, typer.Argument(help="New maximum (ISO 8601 duration, owner only); omit to show it.")
]

# --- access / remote_admin ---------------------------------------------------------------------

PrincipalAddNameArg = Annotated[str, typer.Argument(help="The principal's name (lower case, digits, . _ @ -).")]
PrincipalKindOpt = Annotated[str, typer.Option("--kind", help="human or service")]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read a password from stdin.")]
RuleIdArg = Annotated[int, typer.Argument(help="The rule's id, as `policy show` lists it.")]
RecipientOpt = Annotated[str, typer.Option("--recipient", help="Who receives the data (a name for the agreement).")]
RecipientKeyOpt = Annotated[Path, typer.Option("--recipient-key", help="The recipient's .pub file.")]
ShareCreateDatasetOpt = Annotated[str, typer.Option("--dataset", help="The dataset to share from.")]
ShareCreatePurposeOpt = Annotated[
    str, typer.Option("--purpose", help="The purpose the recipient may use the data for.")
]
FieldsOpt = Annotated[str, typer.Option("--fields", help="Comma-separated field names.")]
ShareCreateExpiresOpt = Annotated[str, typer.Option("--expires", help="ISO 8601 duration.")]
MaxUsesOpt = Annotated[int, typer.Option("--max-uses", help="At least 1.")]
KeepSubjectIdsOpt = Annotated[bool, typer.Option("--keep-subject-ids", help="Do not pseudonymise subject ids.")]
RecipientJurisdictionOpt = Annotated[
    str | None, typer.Option("--recipient-jurisdiction", help="Required: where the recipient is (EU, US-CA...).")
]
TransferMechanismOpt = Annotated[
    str | None,
    typer.Option("--transfer-mechanism", help="adequacy, scc, bcr, explicit-consent, derogation, pipl-..."),
]
ShareExportOutOpt = Annotated[Path, typer.Option("--out", help="Package file to write.")]

# --- requests / remote_records -----------------------------------------------------------------

RequestTypeOpt = Annotated[
    str, typer.Option("--type", help="access|portability|erasure|rectification|restriction|objection|opt-out")
]
RequestSubjectOpt = Annotated[str, typer.Option("--subject", help="The subject's id.")]
RequestJurisdictionOpt = Annotated[
    str | None, typer.Option("--jurisdiction", help="Default: where the subject's data is.")
]
OverdueOpt = Annotated[bool, typer.Option("--overdue", help="Only the overdue ones.")]
MethodOpt = Annotated[str, typer.Option("--method", help="account|document|email|in-person|authorised-agent")]
ExtendReasonOpt = Annotated[str, typer.Option("--reason", help="Why (given to the subject with the notice).")]
RejectReasonOpt = Annotated[str, typer.Option("--reason", help="Why the request is refused (given to the subject).")]
FulfilSubjectOpt = Annotated[
    str | None,
    typer.Option(
        "--subject",
        help="The subject's id (checked against the request). Left out for a portal request: the "
        "identifier verified there is used.",
    ),
]
FulfilOutOpt = Annotated[Path | None, typer.Option("--out", help="Where to write an access/portability export.")]
FulfilPurposeOpt = Annotated[str | None, typer.Option("--purpose", help="Objection / opt-out purpose.")]
ChangeOpt = Annotated[
    list[str] | None, typer.Option("--change", help="Rectification: DATASET.FIELD=VALUE (repeatable).")
]

# --- incidents / remote_records ----------------------------------------------------------------

DescriptionOpt = Annotated[str, typer.Option("--description", help="What happened (no personal data).")]
AuthorityOpt = Annotated[str, typer.Option("--authority", help="The supervisory authority notified.")]

# --- dpia / remote_records ---------------------------------------------------------------------

GenerateOutOpt = Annotated[Path | None, typer.Option("--out", help="Write the DPIA document (JSON) here.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who signs it off (the DPO).")]
VersionOpt = Annotated[int | None, typer.Option("--version", help="Default: the latest.")]

# --- audit / remote_records --------------------------------------------------------------------

AuditOutOpt = Annotated[Path, typer.Option("--out", help="Folder for the report files.")]
AuditFormatOpt = Annotated[str, typer.Option("--format", help="Comma-separated: json, md, html.")]
EpsilonCapOpt = Annotated[float, typer.Option("--epsilon-cap", help="Largest epsilon a model may have.")]
SinceLastOpt = Annotated[bool, typer.Option("--since-last", help="Ledger evidence since the last audit only.")]
ReportArg = Annotated[Path, typer.Argument(help="A report.json written by complai audit.")]

# --- ropa / remote_records ---------------------------------------------------------------------

RopaOutOpt = Annotated[Path | None, typer.Option("--out", help="Folder for ropa.json and ropa.csv.")]
RopaFormatOpt = Annotated[str, typer.Option("--format", help="json, csv or both (comma-separated).")]
RopaJsonOutOpt = Annotated[bool, typer.Option("--json", help="Print the records as JSON.")]

# --- taxonomy / remote_admin -------------------------------------------------------------------

KindArg = Annotated[
    str | None,
    typer.Argument(help="categories, purposes, bases, jurisdictions or subjects (default: all of them)."),
]

# --- models --------------------------------------------------------------------------------------


def print_models(rows: list[dict[str, Any]], json_out: bool) -> None:
    """`model list`: every stored model with its privacy parameters and any erasure flag."""
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no models")
        return
    t = table("model", "dataset", "architecture", "epsilon", "delta", "subjects", "created", "flag")
    for m in rows:
        t.add_row(
            m["model_id"],
            m["dataset"],
            m["architecture"],
            "not private" if not m["private"] else f"{m['epsilon']:.3g}",
            "" if m["delta"] is None else f"{m['delta']:.1e}",
            f"{m['subjects']:,}",
            m["created_at"],
            m["flag_reason"] or "",
        )
    console.print(t)


def print_card_summary(card: dict[str, Any], warnings: list[str]) -> None:
    """A model card in two lines (privacy; held-out evaluation and subjects), then each of `warnings`
    (the card's, from complai.dp.training.card_warnings, which this light module cannot import)."""
    p, u = card["privacy"], card["utility"]
    privacy = (
        f"epsilon {p['epsilon']:.3g} at delta {p['delta']:.1e} ({p['accountant']}; noise {p['noise_multiplier']:.3g}, "
        f"q {p['sample_rate']:.3g}, {p['steps']} steps, clip {p['max_grad_norm']:g})"
        if p["private"]
        else "not private"
    )
    console.print(f"model {card['model_id']} ({card['name']}): {privacy}")
    d = card["data"]
    # a private run's card states no count of subjects (its privacy.size_bound is the public bound), and
    # its held-out evaluation only to principals who may read the dataset
    subjects = (
        f"{d['training_subjects']:,} training subjects"
        if "training_subjects" in d
        else f"subjects at most {p['size_bound']:,} (no exact count on a private card)"
        if "size_bound" in p
        else "no count of subjects"
    )
    if "accuracy" in u:
        held_out = f"held-out accuracy {u['accuracy']:.4f} (majority class {u['majority_accuracy']:.4f})" + (
            f", AUC {u['auc']:.4f}" if u.get("auc") is not None else ""
        )
    else:
        held_out = "held-out evaluation withheld (for principals who may read the dataset)"
    console.print(f"  {held_out}; {subjects}")
    for w in warnings:
        console.print(Text(f"WARNING: {w}", style="bold red"))


# --- printers ------------------------------------------------------------------------------------


def print_dataset(name: str, doc: dict[str, Any], json_out: bool) -> None:
    """`dataset show`: the schema, and the record and subject counts where the document has them."""
    if json_out:
        print_json(doc)
        return
    counts = f": {doc['records']:,} records, {doc['subjects']:,} subjects" if "records" in doc else ""
    console.print(f"[bold]{escape(name)}[/]{counts}")
    console.print(
        f"jurisdiction {doc['jurisdiction']}, retention {doc['retention']}, schema version {doc['schema_version']}"
    )
    p = table("purpose", "lawful basis")
    for purpose, basis in doc["purposes"].items():
        p.add_row(purpose, str(basis))
    console.print(p)
    t = table("field", "type", "category", "identifier", "sensitive")
    for f in doc["fields"]:
        t.add_row(f["name"], f["type"], f["category"], f.get("identifier") or "", "yes" if f.get("sensitive") else "")
    console.print(t)


def print_key_status(st: dict[str, Any], json_out: bool) -> None:
    """`keys status`: the key-encryption key versions and the state of any rotation."""
    if json_out:
        print_json(st)
        return
    t = table(show_header=False, box=None, columns=2)
    for k, v in st.items():
        t.add_row(k.replace("_", " "), json.dumps(v) if isinstance(v, dict) else str(v))
    console.print(t)


def print_request(r: dict[str, Any], json_out: bool) -> None:
    """A subject request: status, deadlines, verification, whether it came through the portal, steps."""
    if json_out:
        print_json(r)
        return
    late = " [red]OVERDUE[/]" if r["overdue"] else ""
    console.print(
        f"{r['id']}: {r['type']} ({r['jurisdiction']}), {r['status']}{late}; due {r['due_at']}"
        + (f", acknowledge by {r['acknowledgement_due']}" if r["acknowledgement_due"] else "")
        + ("; identity verified" if r["verified"] else "; identity not verified")
    )
    portal = r.get("portal")
    if portal:
        console.print(
            "  came through the portal: identity verified by email there"
            + ("" if portal["identifier_held"] else "; the verified identifier is no longer held")
        )
        if portal.get("purpose"):
            console.print(f"  purpose: {portal['purpose']}")
        if portal.get("details"):
            # typed by a member of the public: no markup, no control characters reach the terminal
            asked = "".join(c if c.isprintable() else " " for c in portal["details"])
            console.print(f"  asked: {asked}", markup=False, highlight=False)
    for s in r["steps"]:
        console.print(f"  step {s['step']}: {s['status']}" + (f" ({s['error']})" if s.get("error") else ""))


def print_requests(rows: list[dict[str, Any]], json_out: bool) -> None:
    """`request list`: requests with their deadlines and days left."""
    if json_out:
        print_json(rows)
        return
    t = table("request", "type", "jurisdiction", "status", "due", "days left", "verified")
    for q in rows:
        left = "" if q["days_left"] is None else f"{q['days_left']:g}"
        t.add_row(
            q["id"],
            q["type"],
            q["jurisdiction"],
            q["status"] + (" OVERDUE" if q["overdue"] else ""),
            q["due_at"],
            left,
            "yes" if q["verified"] else "no",
        )
    console.print(t)


def print_incident(i: dict[str, Any], json_out: bool) -> None:
    """An incident: its state, whether it is late, its notification deadline and description."""
    if json_out:
        print_json(i)
    else:
        state = "closed" if i["closed_at"] else ("notified" if i["notified_at"] else "open")
        late = " [red]LATE[/]" if i["late"] else ""
        console.print(f"{i['id']} ({i['kind']}): {state}{late}; notify by {i['notify_by']}. {i['description']}")


def print_incidents(rows: list[dict[str, Any]], json_out: bool) -> None:
    """`incident list`: incidents with their notification deadlines."""
    if json_out:
        print_json(rows)
        return
    t = table("incident", "kind", "opened", "notify by", "notified", "closed", "description")
    for i in rows:
        t.add_row(
            i["id"],
            i["kind"],
            i["opened_at"],
            i["notify_by"] + (" LATE" if i["late"] else ""),
            i["notified_at"] or "",
            i["closed_at"] or "",
            i["description"],
        )
    console.print(t)


def print_budgets(dataset: str, rows: list[dict[str, Any]], json_out: bool) -> None:
    """`dp budget`: each principal's budget on a dataset, what is spent and what is left."""
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"no privacy budget set for {dataset} (queries are refused until one is)")
        return
    t = table("principal", "epsilon", "delta", "rho spent", "(eps, delta) spent", "epsilon left at delta")
    for b in rows:
        t.add_row(
            b["principal"],
            f"{b['epsilon']:g}",
            f"{b['delta']:g}",
            f"{b['rho_spent']:.6g}",
            f"{b['eps_spent_approx']:.4g}, {b['delta_spent_approx']:.3g}",
            f"{b['epsilon_remaining_at_delta']:.4g}",
        )
    console.print(t)


def term_detail(attrs: dict[str, Any]) -> str:
    """A taxonomy term's attributes other than its description, as `name: value` pairs."""
    parts = []
    for k, v in attrs.items():
        if k == "description":
            continue
        shown = ", ".join(map(str, v)) if isinstance(v, list) else ("yes" if v is True else str(v))
        parts.append(f"{k.replace('_', ' ')}: {shown}")
    return "; ".join(parts)


def print_audit_report(model_id: str, report: dict[str, Any], kept: str) -> None:
    """A membership-inference audit's report (`model audit`), local or remote; `kept` says where the
    full report is."""
    claimed = report["claimed_epsilon"]
    console.print(
        f"model {model_id}: {report['members']:,} members, {report['non_members']:,} non-members, "
        f"{report['shadow_models']} shadow models; claimed epsilon "
        + ("none (not private)" if claimed is None else f"{claimed:.3g}")
    )
    t = table("attack", "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "empirical epsilon (95%)")
    for name, a in report["attacks"].items():
        t.add_row(
            name,
            f"{a['auc']:.4f}",
            f"{a['tpr_at_1pct_fpr']:.4f}",
            f"{a['tpr_at_0.1pct_fpr']:.4f}",
            f"{a['empirical_epsilon']:.3f}",
        )
    console.print(t)
    console.print(
        f"largest AUC the claim allows: {report['max_auc_allowed']:.4f}; verdict: {report['verdict']} "
        f"({kept}, ledger entry {report['ledger_seq']})"
    )


# --- external / remote_external ------------------------------------------------------------------
# (their lines are printed whole, never wrapped at the terminal's width: scripts and tests read them)

ExternalDatasetArg = Annotated[str, typer.Argument(help="The external dataset's name.")]
ExternalLocationOpt = Annotated[
    str, typer.Option("--location", help="Parquet file or directory (path or URI), or db.table.")
]
ExternalOwnerOpt = Annotated[
    str, typer.Option("--owner", help="The system that owns the rows (it carries out erasures).")
]
ExternalOwnerKeyOpt = Annotated[
    Path, typer.Option("--owner-key", help="The owner system's X25519 public key (.pub from `share keygen`).")
]
ExternalKindOpt = Annotated[str, typer.Option("--kind", help="parquet or table.")]
ErasureDaysOpt = Annotated[int, typer.Option("--erasure-days", help="Days the owner has to erase.")]
TimeColumnOpt = Annotated[
    str | None, typer.Option("--time-column", help="A date/datetime field: rows older than retention are not read.")
]
IdsFileOpt = Annotated[Path | None, typer.Option("--ids", help="Text file of subject ids, one a line.")]
FromSourceOpt = Annotated[
    bool, typer.Option("--from-source", help="Enrol every distinct subject id the source holds now.")
]
EnrolConsentsOpt = Annotated[Path | None, typer.Option("--consents", help="Consents CSV (as `dataset ingest`).")]
RequestsDatasetArg = Annotated[str | None, typer.Argument(help="An external dataset (all when omitted).")]
RequestsOutOpt = Annotated[
    Path | None, typer.Option("--out", help="Write the open requests, sealed to the owner's key, here.")
]
VerifyDatasetArg = Annotated[
    str | None, typer.Argument(help="An external dataset (all with open requests when omitted).")
]


def read_ids(path: Path) -> list[str]:
    """Subject ids from a text file, one a line (a blank line, or an id with surrounding whitespace, is
    kept as it is and refused by the enrolment: a lake id and an enrolled id must be the same bytes)."""
    from complai.inputs import TABLE_MAX_BYTES, read_input  # heavy: pandas, for the commands that read files

    try:
        text = read_input(path, "ids file", TABLE_MAX_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"ids file {path.name} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def print_registered(name: str, fields: int, purposes: list[str], kind: str, owner: str, json_out: bool) -> None:
    if json_out:
        print_json({"dataset": name, "fields": fields, "purposes": purposes, "kind": kind})
    else:
        console.print(
            f"external dataset [bold]{escape(name)}[/] registered: {fields} fields, owner {escape(owner)}",
            soft_wrap=True,
        )


def print_enrolled(dataset: str, got: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(got)
        return
    console.print(
        f"{got['subjects']} subject(s) enrolled in {escape(dataset)} ({got['new_subjects']} new, "
        f"{got['already_enrolled']} already, {got['skipped_erased']} erased skipped), {got['consents']} consent(s)",
        soft_wrap=True,
    )


def print_erasure_requests(rows: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no erasure requests")
    for row in rows:
        line = f"{row['id']}  {row['dataset']}  {row['subject']}  due {row['due_at']}  {row['state']}"
        console.print(escape(line), soft_wrap=True)


def print_exported_requests(dataset: str, n: int, out: Path, json_out: bool) -> None:
    if json_out:
        print_json({"dataset": dataset, "requests": n, "out": str(out)})
    else:
        console.print(
            f"{n} sealed erasure request(s) for {escape(dataset)} written to {escape(str(out))}", soft_wrap=True
        )


def print_verified(results: dict[str, dict[str, int]], json_out: bool) -> None:
    if json_out:
        print_json(results)
        return
    if not results:
        console.print("no open erasure requests")
    for name, got in results.items():
        console.print(
            f"{escape(name)}: {got['requests']} request(s), {got['gone']} gone, {got['present']} still present",
            soft_wrap=True,
        )
