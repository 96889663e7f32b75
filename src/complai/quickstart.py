"""`complai quickstart`: the whole product on the bundled Adult data, step by step.

Each capability adds its step here, so the quickstart always shows everything complai does on the
embedded default: a workspace, the Adult dataset registered under its schema, a signed and verified
ledger. Each step is one function of the run that goes through sessions only, as any interface does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from complai.access.authz import OWNER
from complai.app import federation
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.config import CONFIG_FILE
from complai.datasets import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.datasets.customer_service import generate
from complai.errors import AlreadyExists, IntegrityError, InvalidInput, PolicyDenied
from complai.federated.engine import FederatedSpec
from complai.ledger.witness import Witness

ANALYST = "credit-analyst"


@dataclass
class Quickstart:
    """One run: where it works, what it prints to, the workspace once created, the bundled data once
    loaded, and the summary the steps fill in (returned, and printed by `--json`)."""

    path: Path
    console: Console
    quiet: bool
    summary: dict[str, Any] = field(default_factory=dict)
    workspace: Workspace | None = None
    adult: pd.DataFrame | None = None

    def owner(self, purpose: str) -> Session:
        """A session as the workspace's owner (who created it) for `purpose`."""
        if self.workspace is None:
            raise AssertionError("the workspace is created by the first step")
        return self.workspace.session(OWNER, purpose)

    def data(self) -> pd.DataFrame:
        if self.adult is None:
            raise AssertionError("the data is loaded by the second step")
        return self.adult


def create_workspace(q: Quickstart) -> str:
    q.workspace = Workspace.init(q.path)
    return f"workspace {q.owner('administration').status().workspace_id}"


def load_data(q: Quickstart) -> str:
    df = q.adult = load_adult()
    q.summary["rows"] = len(df)
    q.summary["subjects"] = int(df["subject_id"].nunique())
    return f"{len(df):,} rows, {q.summary['subjects']:,} subjects (UCI Adult, CC BY 4.0)"


def register_dataset(q: Quickstart) -> str:
    admin = q.owner("administration")
    schema = admin.parse_schema(adult_schema_path())
    missing = {f.name for f in schema.fields} - set(q.data().columns)
    if missing:
        raise InvalidInput(f"bundled Adult data lacks schema fields {sorted(missing)}")
    admin.create_dataset(schema)
    q.summary["dataset"] = schema.name
    q.summary["purposes"] = list(schema.purposes)
    quasi = [f.name for f in schema.fields if f.identifier == "quasi"]
    return (
        f"dataset 'adult': {len(schema.fields)} fields, {len(quasi)} quasi-identifiers, "
        f"purposes {', '.join(schema.purposes)}"
    )


def ingest(q: Quickstart) -> str:
    df = q.data().drop(columns=["split"])
    result = q.owner("administration").ingest("adult", df, adult_consents(df["subject_id"]))
    q.summary["ingested_rows"] = result.rows
    q.summary["consent_records"] = result.consents
    return f"{result.rows:,} rows encrypted under {result.subjects:,} per-subject keys; {result.consents:,} consents"


def governed_reads(q: Quickstart) -> str:
    reads = {
        purpose: len(q.owner(purpose).read("adult", columns=["subject_id", "age", "income"]))
        for purpose in ("credit_scoring", "train_ai_system", "analytics")
    }
    q.summary["governed_reads"] = reads
    total = q.summary["ingested_rows"]
    return "; ".join(f"{p}: {n:,} of {total:,} rows" for p, n in reads.items())


def deidentify(q: Quickstart) -> str:
    research = q.owner("research").read_governed("adult")
    messages = [m.text for m in generate(200, seed=1)]
    results = q.owner("customer_support").deidentify_text(messages, default="hash")
    found = sum(len(changes) for _, changes in results)
    q.summary["research_k"] = research.achieved_k
    q.summary["text_findings"] = found
    return (
        f"research read: {len(research.frame):,} rows, k={research.achieved_k}, direct identifiers dropped; "
        f"{found} PII values pseudonymised in 200 support messages"
    )


def dp_statistics(q: Quickstart) -> str:
    q.owner("administration").set_budget("adult", 3.0, 1e-6)
    s = q.owner("analytics")
    a = s.dp_query("SELECT COUNT(*), AVG(age), AVG(hours_per_week) FROM adult", 0.5)
    g = s.dp_query("SELECT sex, AVG(capital_gain) FROM adult GROUP BY sex", 0.5)
    left = s.budget("adult").epsilon_remaining
    q.summary["dp"] = {"count": a.values["count(*)"], "mean_age": a.values["mean(age)"], "epsilon_left": left}
    gains = ", ".join(f"{k} {v:,.0f}" for k, v in g.values["mean(capital_gain)"].items())
    return (
        f"count {a.values['count(*)']:,.0f} (±{a.accuracy['count(*)']:.0f}), mean age "
        f"{a.values['mean(age)']:.2f} (±{a.accuracy['mean(age)']:.2f}); mean capital gain by sex: {gains}; "
        f"spent epsilon 1.0 of 3.0, {left:.2f} left"
    )


def train(q: Quickstart) -> str:
    trainer = q.owner("train_ai_system")
    card = trainer.train(
        "adult",
        label="income",
        model="logreg",
        target_epsilon=1.0,
        delta=5e-7,
        epochs=3,
        batch_size=512,
        learning_rate=0.05,
        name="credit-scoring-dp",
        intended_use="Demonstration of DP-SGD credit scoring on the UCI Adult sample (income above 50K or not)",
        limitations=[
            "Not for decisions about real people: trained on 1994 US census data, 3 epochs, a linear model",
            "The fairness section covers only the attributes the schema marks sensitive",
        ],
    )
    p, u = card["privacy"], card["utility"]
    card_file = str(q.path / "models" / card["model_id"] / "card.md")  # the workspace's model store
    q.summary["model"] = {
        "model_id": card["model_id"],
        "epsilon": p["epsilon"],
        "delta": p["delta"],
        "accuracy": u["accuracy"],
        "card": card_file,
    }
    return (
        f"model {card['model_id']}: epsilon {p['epsilon']:.3f} at delta {p['delta']:.0e}, "
        f"held-out accuracy {u['accuracy']:.3f} (majority {u['majority_accuracy']:.3f}); card {card_file}"
    )


def federated(q: Quickstart) -> str:
    spec = FederatedSpec(organisations=3, rounds=3, rows=6000, local_epochs=2, secure_aggregation=True, seed=7)
    root = q.path / "federation"
    out = federation.simulate(spec, root)
    last = out["history"][-1]
    q.summary["federated"] = {
        "run_id": out["run_id"],
        "organisations": 3,
        "rounds": spec.rounds,
        "accuracy": last["accuracy"],
        "root": str(root),
    }
    return (
        f"3 organisations (own workspaces, consented rows only), {spec.rounds} rounds of FedAvg with secure "
        f"aggregation: accuracy {last['accuracy']:.3f}; each organisation's ledger holds digests of what it sent"
    )


def access_control(q: Quickstart) -> str:
    owner = q.owner("administration")
    owner.add_principal(ANALYST, "service")
    owner.grant_role(ANALYST, "analyst")
    owner.add_rule("role:analyst", "adult", "read", "credit_scoring")
    token = owner.create_token(ANALYST, expires="P1D").token
    assert q.workspace is not None
    rows = len(q.workspace.session(token, "credit_scoring").read("adult", columns=["age", "income"]))
    try:
        q.workspace.session(token, "marketing").read("adult")
        denied = "NOT denied"
    except PolicyDenied:
        denied = "denied and recorded"
    q.summary["analyst_rows"] = rows
    return f"analyst token: credit_scoring read {rows:,} rows; marketing read {denied}"


def sign_and_verify(q: Quickstart) -> str:
    witness = Witness.init(q.path / "witness", "witness.quickstart.example")
    q.owner("administration").trust_witness(witness.verifier)
    auditor = q.owner("audit")
    note = auditor.ledger_checkpoint()
    auditor.witness_cosign(witness)
    report = auditor.ledger_verify()
    if not report.ok:
        raise IntegrityError(f"ledger verification failed: {report.problem}")
    q.summary["ledger_size"] = report.size
    q.summary["ledger_root"] = report.root
    return f"signed checkpoint at size {note.checkpoint.size}, cosigned by a witness; ledger verified"


def compliance_audit(q: Quickstart) -> str:
    auditor = q.owner("audit")
    auditor.dpia_generate("adult")  # special categories, credit scoring, AI training: Art. 35
    auditor.dpia_sign("adult", by="Data Protection Officer")
    result = auditor.compliance_audit(q.path / "audit")
    s = result["summary"]
    q.summary["audit"] = {"summary": s, "html": result["files"]["html"], "digest": result["digest"]}
    return (
        f"DPIA generated and signed off; {s['pass']} controls pass, {s['fail']} fail, "
        f"{s['not applicable']} not applicable, {s['not evaluated']} not evaluated; "
        f"report {result['files']['html']}"
    )


STEPS: list[tuple[str, Callable[[Quickstart], str]]] = [
    ("Create workspace", create_workspace),
    ("Load bundled data", load_data),
    ("Register dataset with its schema", register_dataset),
    ("Ingest with consents (encrypted)", ingest),
    ("Governed reads per purpose", governed_reads),
    ("De-identification (k-anonymity, text)", deidentify),
    ("Differentially private statistics", dp_statistics),
    ("DP-SGD credit model and its card", train),
    ("Federated training with secure aggregation", federated),
    ("Access control (token, policy)", access_control),
    ("Sign and verify the ledger", sign_and_verify),
    ("Compliance audit", compliance_audit),
]


def _clear(path: Path, reset: bool) -> None:
    """Refuse a path that holds anything but a workspace, or a workspace without --reset (removed with it)."""
    if not path.exists():
        return
    if not (path / CONFIG_FILE).exists():
        if not (path.is_dir() and not any(path.iterdir())):
            raise InvalidInput(f"{path} exists and is not a complai workspace; choose another --workspace")
    elif reset:
        shutil.rmtree(path)
    else:
        raise AlreadyExists(f"a workspace already exists at {path}; pass --reset to replace it")


def run_quickstart(path: Path, reset: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run every step in a new workspace at `path`. Progress (a bar, and one line per step done) goes to
    stderr; the results table and where to look next (the workspace, the model card, the audit report)
    to stdout. `quiet`: neither, only the returned summary (for `--json`)."""
    path = Path(path)
    _clear(path, reset)
    progress_to = Console(stderr=True, quiet=quiet, highlight=False)
    out = Console(quiet=quiet, highlight=False)
    q = Quickstart(path, progress_to, quiet, summary={"workspace": str(path)})
    results = []
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=progress_to,
            transient=True,
        ) as bar:
            task = bar.add_task("quickstart", total=len(STEPS))
            for title, step in STEPS:
                bar.update(task, description=title)
                t0 = time.perf_counter()
                detail = step(q)
                results.append((title, detail, time.perf_counter() - t0))
                bar.advance(task)
                progress_to.print(f"[green]✓[/] {title}")
    finally:
        if q.workspace is not None:
            q.workspace.close()
    table = Table(title="complai quickstart", show_lines=False)
    table.add_column("step", overflow="fold")
    table.add_column("result", overflow="fold")
    table.add_column("time", justify="right")
    for title, detail, secs in results:
        table.add_row(title, detail, f"{secs:.2f}s")
    out.print(table)
    summary = q.summary
    out.print(f"Workspace: [bold]{path}[/]  (try: complai --workspace {path} ledger status)", soft_wrap=True)
    if "model" in summary:
        out.print(f"Model card: [bold]{summary['model']['card']}[/]", soft_wrap=True)
    if "audit" in summary:
        out.print(f"Audit report: [bold]{summary['audit']['html']}[/] (open it in a browser)", soft_wrap=True)
    summary["steps"] = [{"step": t, "result": d, "seconds": round(s, 3)} for t, d, s in results]
    return summary
