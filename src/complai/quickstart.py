"""`complai quickstart`: the whole product on the bundled Adult data, step by step.

Each capability adds its step here, so the quickstart always shows everything complai does on the
embedded default: a workspace, the Adult dataset registered under its schema, a signed and verified
ledger.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.config import CONFIG_FILE
from complai.datasets import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.datasets.customer_service import generate
from complai.errors import AlreadyExists, IntegrityError, InvalidInput, PolicyDenied
from complai.events import decode_event
from complai.ledger.verify import verify_ledger
from complai.vault.schema import load_schema


def run_quickstart(path: Path, reset: bool = False, quiet: bool = False) -> dict[str, Any]:
    path = Path(path)
    if path.exists():
        if not (path / CONFIG_FILE).exists():
            if path.is_dir() and not any(path.iterdir()):
                pass
            else:
                raise InvalidInput(f"{path} exists and is not a complai workspace; choose another --workspace")
        elif reset:
            shutil.rmtree(path)
        else:
            raise AlreadyExists(f"a workspace already exists at {path}; pass --reset to replace it")
    console = Console(stderr=True, quiet=quiet, highlight=False)
    summary: dict[str, Any] = {"workspace": str(path)}
    steps: list[tuple[str, Callable[[], str]]] = []
    state: dict[str, Any] = {}

    def create() -> str:
        state["ws"] = Workspace.init(path)
        return f"workspace {state['ws'].settings.workspace_id}"

    def load() -> str:
        df = load_adult()
        state["df"] = df
        summary["rows"] = len(df)
        summary["subjects"] = int(df["subject_id"].nunique())
        return f"{len(df):,} rows, {summary['subjects']:,} subjects (UCI Adult, CC BY 4.0)"

    def register() -> str:
        ws: Workspace = state["ws"]
        schema = load_schema(adult_schema_path(), ws.taxonomy)
        missing = {f.name for f in schema.fields} - set(state["df"].columns)
        if missing:
            raise InvalidInput(f"bundled Adult data lacks schema fields {sorted(missing)}")
        ws.session(OWNER, "administration").create_dataset(schema)
        summary["dataset"] = schema.name
        summary["purposes"] = list(schema.purposes)
        quasi = [f.name for f in schema.fields if f.identifier == "quasi"]
        return (
            f"dataset 'adult': {len(schema.fields)} fields, {len(quasi)} quasi-identifiers, "
            f"purposes {', '.join(schema.purposes)}"
        )

    def ingest() -> str:
        ws: Workspace = state["ws"]
        df = state["df"].drop(columns=["split"])
        cons = adult_consents(df["subject_id"], now=ws.clock.now())
        result = ws.session(OWNER, "administration").ingest("adult", df, cons)
        summary["ingested_rows"] = result.rows
        summary["consent_records"] = result.consents
        return (
            f"{result.rows:,} rows encrypted under {result.subjects:,} per-subject keys; {result.consents:,} consents"
        )

    def governed_read() -> str:
        ws: Workspace = state["ws"]
        reads = {}
        for purpose in ("credit_scoring", "train_ai_system", "analytics"):
            frame = ws.session(OWNER, purpose).read("adult", columns=["subject_id", "age", "income"])
            reads[purpose] = len(frame)
        summary["governed_reads"] = reads
        total = summary["ingested_rows"]
        return "; ".join(f"{p}: {n:,} of {total:,} rows" for p, n in reads.items())

    def deidentify() -> str:
        ws: Workspace = state["ws"]
        research = ws.session(OWNER, "research").read("adult")
        event = decode_event(ws.ledger.entry(ws.ledger.head().size - 1).data)
        achieved = event.deidentification["k_anonymity"]["achieved_k"]  # type: ignore[attr-defined]
        messages = [m.text for m in generate(200, seed=1)]
        results = ws.session(OWNER, "customer_support").deidentify_text(messages, default="hash")
        found = sum(len(changes) for _, changes in results)
        summary["research_k"] = achieved
        summary["text_findings"] = found
        return (
            f"research read: {len(research):,} rows, k={achieved}, direct identifiers dropped; "
            f"{found} PII values pseudonymised in 200 support messages"
        )

    def dp_stats() -> str:
        ws: Workspace = state["ws"]
        ws.session(OWNER, "administration").set_budget("adult", 3.0, 1e-6)
        s = ws.session(OWNER, "analytics")
        a = s.dp_query("SELECT COUNT(*), AVG(age), AVG(hours_per_week) FROM adult", 0.5)
        g = s.dp_query("SELECT sex, AVG(capital_gain) FROM adult GROUP BY sex", 0.5)
        left = ws.budgets.get("adult").epsilon_remaining
        summary["dp"] = {"count": a.values["count(*)"], "mean_age": a.values["mean(age)"], "epsilon_left": left}
        gains = ", ".join(f"{k} {v:,.0f}" for k, v in g.values["mean(capital_gain)"].items())
        return (
            f"count {a.values['count(*)']:,.0f} (±{a.accuracy['count(*)']:.0f}), mean age "
            f"{a.values['mean(age)']:.2f} (±{a.accuracy['mean(age)']:.2f}); mean capital gain by sex: {gains}; "
            f"spent epsilon 1.0 of 3.0, {left:.2f} left"
        )

    def train() -> str:
        from complai.dp.training import card_markdown

        ws: Workspace = state["ws"]
        card = ws.session(OWNER, "train_ai_system").train(
            "adult",
            label="income",
            model="logreg",
            target_epsilon=1.0,
            delta=5e-7,
            epochs=3,
            batch_size=512,
            learning_rate=0.05,
            name="credit-scoring-dp",
        )
        p, u = card["privacy"], card["utility"]
        summary["model"] = {
            "model_id": card["model_id"],
            "epsilon": p["epsilon"],
            "delta": p["delta"],
            "accuracy": u["accuracy"],
            "card": str(ws.models.directory(card["model_id"]) / "card.md"),
        }
        if not quiet:
            console.print(card_markdown(card), markup=False, highlight=False)
        return (
            f"model {card['model_id']}: epsilon {p['epsilon']:.3f} at delta {p['delta']:.0e}, "
            f"held-out accuracy {u['accuracy']:.3f} (majority {u['majority_accuracy']:.3f}); "
            f"card {summary['model']['card']}"
        )

    def federated() -> str:
        from complai.app.federation import simulate
        from complai.federated.engine import FederatedSpec

        spec = FederatedSpec(organisations=3, rounds=3, rows=6000, local_epochs=2, secure_aggregation=True, seed=7)
        out = simulate(spec, path / "federation")
        last = out["history"][-1]
        summary["federated"] = {
            "run_id": out["run_id"],
            "organisations": 3,
            "rounds": spec.rounds,
            "accuracy": last["accuracy"],
            "root": str(path / "federation"),
        }
        return (
            f"3 organisations (own workspaces, consented rows only), {spec.rounds} rounds of FedAvg with secure "
            f"aggregation: accuracy {last['accuracy']:.3f}; each organisation's ledger holds digests of what it sent"
        )

    def access() -> str:
        ws: Workspace = state["ws"]
        ws.identity.add(OWNER, "credit-analyst", "service")
        ws.identity.grant_role(OWNER, "credit-analyst", "analyst")
        ws.policy.add(OWNER, "role:analyst", "adult", "read", "credit_scoring")
        _, token = ws.identity.create_token(OWNER, "credit-analyst", expires="P1D")
        rows = len(ws.session(token, "credit_scoring").read("adult", columns=["age", "income"]))
        try:
            ws.session(token, "marketing").read("adult")
            denied = "NOT denied"
        except PolicyDenied:
            denied = "denied and recorded"
        summary["analyst_rows"] = rows
        return f"analyst token: credit_scoring read {rows:,} rows; marketing read {denied}"

    def checkpoint() -> str:
        from complai.ledger.witness import Witness, cosign_latest

        ws: Workspace = state["ws"]
        witness = Witness.init(path / "witness", "witness.quickstart.example")
        ws.session(OWNER, "administration").trust_witness(witness.verifier)
        note = ws.ledger.checkpoint()
        cosign_latest(ws.ledger, witness, ws.clock.now(), int(time.time()))
        report = verify_ledger(ws.ledger)
        if not report.ok:
            raise IntegrityError(f"ledger verification failed: {report.problem}")
        summary["ledger_size"] = report.size
        summary["ledger_root"] = report.root
        return f"signed checkpoint at size {note.checkpoint.size}, cosigned by a witness; ledger verified"

    def audit() -> str:
        ws: Workspace = state["ws"]
        auditor = ws.session(OWNER, "audit")
        auditor.dpia("generate", "adult")  # special categories, credit scoring, AI training: Art. 35
        auditor.dpia("sign", "adult", by="Data Protection Officer")
        result = auditor.compliance_audit(path / "audit")
        s = result["summary"]
        summary["audit"] = {"summary": s, "html": result["files"]["html"], "digest": result["digest"]}
        return (
            f"DPIA generated and signed off; {s['pass']} controls pass, {s['fail']} fail, "
            f"{s['not applicable']} not applicable, {s['not evaluated']} not evaluated; "
            f"report {result['files']['html']}"
        )

    steps = [
        ("Create workspace", create),
        ("Load bundled data", load),
        ("Register dataset with its schema", register),
        ("Ingest with consents (encrypted)", ingest),
        ("Governed reads per purpose", governed_read),
        ("De-identification (k-anonymity, text)", deidentify),
        ("Differentially private statistics", dp_stats),
        ("DP-SGD credit model and its card", train),
        ("Federated training with secure aggregation", federated),
        ("Access control (token, policy)", access),
        ("Sign and verify the ledger", checkpoint),
        ("Compliance audit", audit),
    ]
    results = []
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        ) as bar:
            for title, fn in steps:
                task = bar.add_task(title, total=None)
                t0 = time.perf_counter()
                detail = fn()
                results.append((title, detail, time.perf_counter() - t0))
                bar.remove_task(task)
                console.print(f"[green]✓[/] {title}: {detail}")
    finally:
        if "ws" in state:
            state["ws"].close()
    table = Table(title="complai quickstart", show_lines=False)
    table.add_column("step")
    table.add_column("result")
    table.add_column("time", justify="right")
    for title, detail, secs in results:
        table.add_row(title, detail, f"{secs:.2f}s")
    console.print(table)
    console.print(f"Workspace: [bold]{path}[/]  (try: complai --workspace {path} ledger status)")
    if "audit" in summary:
        console.print(f"Audit report: [bold]{summary['audit']['html']}[/] (open it in a browser)")
    summary["steps"] = [{"step": t, "result": d, "seconds": round(s, 3)} for t, d, s in results]
    return summary
