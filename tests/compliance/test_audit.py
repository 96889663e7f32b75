"""Compliance audits: a clean workspace passes the evaluated controls; each planted violation fails
exactly its control, naming the items at fault; reports verify against the ledger and fail when changed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, insert, select, update

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import to_us, utc_iso
from complai.compliance import engine
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.errors import IntegrityError, InvalidInput
from complai.events import AgreementChanged, DataShared, FederatedRound
from complai.ledger.witness import Witness
from complai.store.tables import access_log, agreements, consents, datasets, ledger_entries, records, subjects
from complai.vault.schema import load_schema
from complai.vault.service import pack_ids, unpack_ids
from tests.ledger.test_witness import witness_round

EVALUATED = {
    "LEDGER-1",
    "DATA-1",
    "BASIS-1",
    "RET-1",
    "ENC-1",
    "ERASE-1",
    "ERASE-2",
    "DP-1",
    "FL-1",
    "ACCESS-1",
    "CONSENT-1",
    "SHARE-1",
    "DEID-1",
    "REQ-1",
    "ROPA-1",
    "INC-1",
    "DPIA-1",
    "MIN-1",
    "XFER-1",
    "RECON-1",
}
NOT_APPLICABLE_WHEN_CLEAN = {"ERASE-1", "ERASE-2", "FL-1", "SHARE-1", "DEID-1", "REQ-1", "INC-1", "MIN-1", "XFER-1"}


def _audit(ws: Workspace, **kw: float) -> dict[str, dict]:
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now(), **kw)
    return {c["id"]: c for c in engine.run_controls(ctx)}


def _witnessed(ws: Workspace, tmp_path: Path) -> Witness:
    w = Witness.init(tmp_path / "witness", "w.example")
    ws.ledger.add_witness(w.verifier, ws.clock.now())
    ws.ledger.checkpoint()
    witness_round(ws, w)
    return w


@pytest.fixture
def clean(sqlite_ws: Workspace, tmp_path: Path) -> tuple[Workspace, Witness]:
    ws = sqlite_ws
    # the clean fixture keeps only Art. 9 purposes (all of Adult's now are; a planted change below adds
    # one that is not)
    raw = yaml.safe_load(adult_schema_path().read_text())
    raw["purposes"] = {k: v for k, v in raw["purposes"].items() if str(v).startswith("gdpr.art9")}
    raw["deidentify"] = {k: v for k, v in raw["deidentify"].items() if k in raw["purposes"]}
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(raw, ws.taxonomy))
    df = load_adult("train").head(300).drop(columns=["split"], errors="ignore")
    admin.ingest("adult", df, adult_consents(df["subject_id"], now=ws.clock.now()))
    admin.set_budget("adult", 20.0, 1e-3)
    ws.session(OWNER, "train_ai_system").train("adult", label="income", target_epsilon=1.0, delta=1e-4, epochs=1)
    auditor = ws.session(OWNER, "audit")
    auditor.dpia_generate("adult")
    auditor.dpia_sign("adult", "DPO")
    w = _witnessed(ws, tmp_path)
    return ws, w


def _share_under_expired_agreement(ws: Workspace, agreement: str) -> None:
    """Plant an agreement that expired yesterday and a share recorded under it today."""
    past = ws.clock.now() - timedelta(days=1)
    with ws.store.write() as conn:
        conn.execute(
            insert(agreements).values(
                id=agreement,
                recipient="lab",
                recipient_key="k",
                dataset="adult",
                purpose="research",
                fields_json="[]",
                deid_json="{}",
                expires_at=past,
                max_uses=1,
                uses=1,
                created_by=OWNER,
                created_at=past - timedelta(days=30),
                recipient_jurisdiction="EU",
            )
        )
    ws.ledger.record(  # the agreement's own entry, so that only the expired use is wrong (RECON-1 agrees)
        AgreementChanged(
            time=past - timedelta(days=30),
            actor=OWNER,
            purpose="research",
            agreement=agreement,
            recipient="lab",
            dataset="adult",
            for_purpose="research",
            fields=[],
            expires=utc_iso(past),
            max_uses=1,
            change="created",
        )
    )
    ws.ledger.record(
        DataShared(
            time=ws.clock.now(),
            actor=OWNER,
            purpose="research",
            agreement=agreement,
            recipient="lab",
            dataset="adult",
            fields=["age"],
            rows=10,
            subjects=10,
            subjects_digest="sha256:" + "1" * 64,
            data_digest="sha256:" + "2" * 64,
            use=1,
        )
    )


def _add_to_read(conn: object, read: int, subject_id: int) -> None:
    """Plant: the read at ledger entry `read` reached one more subject."""
    blob = conn.execute(select(access_log.c.subject_ids).where(access_log.c.seq == read)).scalar_one()  # type: ignore[attr-defined]
    ids = pack_ids([*unpack_ids(blob), subject_id])
    conn.execute(update(access_log).where(access_log.c.seq == read).values(subject_ids=ids))  # type: ignore[attr-defined]


def _failing(results: dict[str, dict]) -> set[str]:
    return {k for k, c in results.items() if c["status"] == "fail"}


def test_the_clean_workspace_passes_every_evaluated_control(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    results = _audit(ws)
    assert _failing(results) == set()
    assert {k for k, c in results.items() if c["status"] == "pass"} == EVALUATED - NOT_APPLICABLE_WHEN_CLEAN
    assert {k for k, c in results.items() if c["status"] == "not applicable"} == NOT_APPLICABLE_WHEN_CLEAN
    assert all(c["status"] == "not evaluated" for k, c in results.items() if k not in EVALUATED)


def test_a_field_without_category_fails_data_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    with ws.store.write() as conn:
        raw = json.loads(conn.execute(select(datasets.c.schema_json)).scalar_one())
        raw["fields"][3]["category"] = ""
        conn.execute(update(datasets).values(schema_json=json.dumps(raw)))
    results = _audit(ws)
    assert _failing(results) == {"DATA-1", "RECON-1"}  # the schema was edited at rest: RECON-1 says so
    assert "its stored schema is not the one registered" in results["RECON-1"]["items"][0]["problem"]
    assert results["DATA-1"]["items"] == [{"item": f"adult.{raw['fields'][3]['name']}", "problem": "no data category"}]


def test_records_past_retention_fail_ret_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    ws.clock.advance(timedelta(days=3660))  # type: ignore[attr-defined]
    results = _audit(ws)
    assert "RET-1" in _failing(results)
    assert (
        results["RET-1"]["items"][0]["item"] == "adult"
        and "300 records past retention" in results["RET-1"]["items"][0]["problem"]
    )


def test_a_model_over_the_cap_fails_dp_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    model = ws.models.list()[0]["model_id"]
    results = _audit(ws, epsilon_cap=0.5)
    assert _failing(results) == {"DP-1"}
    assert (
        results["DP-1"]["items"][0]["item"] == f"model {model}"
        and "exceeds the cap 0.5" in results["DP-1"]["items"][0]["problem"]
    )


def test_erasing_a_training_subject_fails_erase_1_until_the_model_is_dealt_with(
    clean: tuple[Workspace, Witness],
) -> None:
    ws, w = clean
    model = ws.models.list()[0]["model_id"]
    frame, _, _, _ = ws.vault.fetch("adult", "train_ai_system", ["subject_id"], pseudonym_column="p")
    member = frame[frame["p"].isin(ws.models.training_subjects(model))].iloc[0]["subject_id"]
    ws.session(OWNER, "subject_request").erase_subject(member)
    ws.ledger.checkpoint()
    witness_round(ws, w)
    results = _audit(ws)
    assert _failing(results) == {"ERASE-1"}
    assert results["ERASE-1"]["items"][0]["item"] == f"model {model}"


def test_unsecured_federated_rounds_and_unknown_actors_fail_their_controls(clean: tuple[Workspace, Witness]) -> None:
    ws, w = clean
    ws.ledger.record(
        FederatedRound(
            time=ws.clock.now(),
            actor="mallory",
            purpose="federated_training",
            run_id="r",
            round=1,
            sampled=3,
            survivors=3,
            dropped=0,
            secure_aggregation=False,
            dp="none",
            noise_multiplier=None,
            clip_norm=1.0,
            sample_rate=1.0,
            epsilon=None,
            delta=None,
            aggregate_digest="sha256:" + "0" * 64,
        )
    )
    ws.ledger.checkpoint()
    witness_round(ws, w)
    results = _audit(ws)
    assert _failing(results) == {"FL-1", "ACCESS-1"}
    assert results["FL-1"]["items"][0]["item"] == "run r round 1"
    assert results["ACCESS-1"]["items"][0]["item"] == "actor 'mallory'"


def test_a_read_without_consent_fails_consent_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    read = max(
        e["_seq"]
        for e in engine.AuditContext(compliance_services(ws.services), ws.clock.now()).entries()
        if e.get("type") == "vault.read"
    )
    with ws.store.read() as conn:
        consented = select(consents.c.subject_id).where(consents.c.purpose == "train_ai_system")
        outsider, pseudonym = conn.execute(
            select(subjects.c.id, subjects.c.pseudonym).where(subjects.c.id.not_in(consented)).limit(1)
        ).one()
    with ws.store.write() as conn:
        _add_to_read(conn, read, outsider)
    results = _audit(ws)
    assert _failing(results) == {"CONSENT-1", "RECON-1"}  # the access log was edited at rest: RECON-1 says so
    assert f"read at ledger entry {read}: the access log names" in results["RECON-1"]["items"][0]["problem"]
    item = results["CONSENT-1"]["items"][0]
    assert item["item"] == f"read at ledger entry {read} (train_ai_system)" and pseudonym in item["problem"]


def test_an_expired_agreement_used_fails_share_1(clean: tuple[Workspace, Witness], tmp_path: Path) -> None:
    ws, w = clean
    _share_under_expired_agreement(ws, "agr-expired")
    ws.ledger.checkpoint()
    witness_round(ws, w)
    results = _audit(ws)
    assert _failing(results) == {"SHARE-1"}
    assert "agreement agr-expired had expired" in results["SHARE-1"]["items"][0]["problem"]


def test_an_overdue_request_fails_req_1(clean: tuple[Workspace, Witness]) -> None:
    ws, w = clean
    subject = ws.vault.fetch("adult", "credit_scoring", ["subject_id"])[0]["subject_id"].iloc[0]
    req = ws.session(OWNER, "subject_request").request_open("access", subject).value
    ws.clock.advance(timedelta(days=40))  # type: ignore[attr-defined]
    ws.ledger.checkpoint()
    witness_round(ws, w)
    results = _audit(ws)
    assert _failing(results) == {"REQ-1"}
    assert results["REQ-1"]["items"][0]["item"] == f"request {req['id']} (access, EU)"


def test_a_missing_or_stale_dpia_fails_dpia_1(clean: tuple[Workspace, Witness]) -> None:
    ws, w = clean
    auditor = ws.session(OWNER, "audit")
    auditor.dpia_generate("adult")  # a new version, not yet signed off
    ws.ledger.checkpoint()
    witness_round(ws, w)
    results = _audit(ws)
    assert _failing(results) == {"DPIA-1"}
    assert (
        results["DPIA-1"]["items"] == [{"item": "adult", "problem": results["DPIA-1"]["items"][0]["problem"]}]
        and "not signed off" in results["DPIA-1"]["items"][0]["problem"]
    )
    auditor.dpia_sign("adult", "DPO")
    ws.clock.advance(timedelta(days=400))  # type: ignore[attr-defined]
    assert auditor.dpia_status("adult")["why"] == "signed off more than a year ago"


def test_a_field_read_beyond_its_purpose_fails_min_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    with ws.store.write() as conn:
        raw = json.loads(conn.execute(select(datasets.c.schema_json)).scalar_one())
        field = next(f for f in raw["fields"] if f["name"] == "hours_per_week")
        field["category"] = "user.health"  # a known category, but not one credit scoring may read
        conn.execute(update(datasets).values(schema_json=json.dumps(raw)))
    seq = ws.vault.record_read("adult", "credit_scoring", OWNER, ["age", "hours_per_week"], 10, set(), 300)
    results = _audit(ws)
    assert _failing(results) == {"MIN-1", "RECON-1"}  # the schema was edited at rest: RECON-1 says so
    assert results["MIN-1"]["items"] == [
        {
            "item": f"read at ledger entry {seq} (credit_scoring)",
            "problem": "field adult.hours_per_week (user.health) is outside the purpose's categories",
        }
    ]


def test_a_transfer_without_mechanism_fails_xfer_1(clean: tuple[Workspace, Witness], tmp_path: Path) -> None:
    from complai.crypto.sealing import generate_keypair

    ws, _ = clean
    public = generate_keypair(tmp_path / "lab.key")
    with pytest.raises(InvalidInput, match="is a transfer: record its mechanism"):
        ws.agreements.create(OWNER, "lab", public, "adult", "research", ["age"], recipient_jurisdiction="US")
    a = ws.agreements.create(
        OWNER, "lab", public, "adult", "research", ["age"], recipient_jurisdiction="US", transfer_mechanism="scc"
    )
    assert _audit(ws)["XFER-1"]["status"] == "pass"
    with ws.store.write() as conn:  # an agreement recorded before transfers were tracked
        conn.execute(update(agreements).where(agreements.c.id == a.id).values(recipient_jurisdiction=None))
    results = _audit(ws)
    assert _failing(results) == {"XFER-1", "RECON-1"}  # simulated at rest: the terms its entry recorded differ
    assert results["XFER-1"]["items"] == [
        {"item": f"agreement {a.id}", "problem": "the recipient's jurisdiction is not recorded"}
    ]


def test_a_tampered_ledger_row_fails_ledger_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    with ws.store.write() as conn:
        data = bytes(conn.execute(select(ledger_entries.c.data).where(ledger_entries.c.seq == 3)).scalar_one())
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 3).values(data=data.replace(b'"', b"'", 1)))
    results = _audit(ws)
    assert "LEDGER-1" in _failing(results)
    assert results["LEDGER-1"]["items"][0]["item"] == "ledger"


def test_reports_verify_against_the_ledger_and_fail_after_any_change(
    clean: tuple[Workspace, Witness], tmp_path: Path
) -> None:
    ws, _ = clean
    out = ws.session(OWNER, "audit").compliance_audit(tmp_path / "r")
    path = Path(out["files"]["json"])
    assert ws.session(OWNER, "audit").verify_report(path)["ledger_seq"] == out["ledger_seq"]
    assert "Report digest" in Path(out["files"]["md"]).read_text()
    data = path.read_bytes()
    for i in range(0, len(data), 7):  # every seventh byte, first and last included
        changed = bytearray(data)
        changed[i] = (changed[i] + 1) % 256
        path.write_bytes(bytes(changed))
        with pytest.raises(IntegrityError):
            ws.session(OWNER, "audit").verify_report(path)
    changed = bytearray(data)
    changed[-1] ^= 1
    path.write_bytes(bytes(changed))
    with pytest.raises(IntegrityError):
        ws.session(OWNER, "audit").verify_report(path)
    path.write_bytes(data)
    assert ws.session(OWNER, "audit").verify_report(path)["digest"] == out["digest"]


def test_a_special_category_purpose_without_art9_condition_fails_basis_1(clean: tuple[Workspace, Witness]) -> None:
    ws, _ = clean
    with ws.store.write() as conn:
        raw = json.loads(conn.execute(select(datasets.c.schema_json)).scalar_one())
        raw["purposes"]["analytics"] = "gdpr.legitimate_interests"
        conn.execute(update(datasets).values(schema_json=json.dumps(raw)))
    results = _audit(ws)
    assert _failing(results) == {"BASIS-1", "RECON-1"}  # the schema was edited at rest: RECON-1 says so
    assert results["BASIS-1"]["items"][0]["item"] == "adult: analytics"


def test_an_incremental_audit_covers_only_new_evidence_and_still_catches_tampering(
    clean: tuple[Workspace, Witness], tmp_path: Path
) -> None:
    ws, w = clean
    auditor = ws.session(OWNER, "audit")
    first = auditor.compliance_audit(tmp_path / "a1")
    assert first["report"]["scope"]["since"] == 0
    ws.session(OWNER, "credit_scoring").read("adult", columns=["age"])
    ws.ledger.checkpoint()
    witness_round(ws, w)
    second = auditor.compliance_audit(tmp_path / "a2", since_last=True)
    scope = second["report"]["scope"]
    assert scope["since"] == first["report"]["scope"]["ledger_size"]
    assert second["summary"]["fail"] == 0
    consent = {c["id"]: c for c in second["report"]["controls"]}["CONSENT-1"]
    assert consent["evidence"]["reads"] == 1  # only the read made since the first audit
    # an entry added since the last audit (here: that audit's own record) changed after the fact is
    # caught by the next incremental check
    with ws.store.write() as conn:
        seq = scope["ledger_size"]
        data = bytes(conn.execute(select(ledger_entries.c.data).where(ledger_entries.c.seq == seq)).scalar_one())
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == seq).values(data=data + b" "))
    third = auditor.compliance_audit(tmp_path / "a3", since_last=True)
    ledger = {c["id"]: c for c in third["report"]["controls"]}["LEDGER-1"]
    assert ledger["status"] == "fail" and "since entry" in ledger["items"][0]["problem"]


def test_all_planted_violations_together_fail_exactly_their_controls(
    clean: tuple[Workspace, Witness], tmp_path: Path
) -> None:
    """The acceptance fixture: a read without consent, records past retention, an overdue request, a
    model over its epsilon cap, a field without category, an expired agreement used and a tampered
    ledger row, all at once: exactly the seven matching controls fail, each naming what is at fault, and
    RECON-1, which finds the expiries, the schema and the access log edited at rest."""
    ws, w = clean
    model = ws.models.list()[0]["model_id"]
    subject = ws.vault.fetch("adult", "credit_scoring", ["subject_id"])[0]["subject_id"].iloc[0]
    req = ws.session(OWNER, "subject_request").request_open("access", subject).value
    ws.clock.advance(timedelta(days=40))  # type: ignore[attr-defined]
    read = max(
        e["_seq"]
        for e in engine.AuditContext(compliance_services(ws.services), ws.clock.now()).entries()
        if e.get("type") == "vault.read"
    )
    past = ws.clock.now() - timedelta(days=1)
    with ws.store.write() as conn:
        consented = select(consents.c.subject_id).where(consents.c.purpose == "train_ai_system")
        outsider = conn.execute(select(subjects.c.id).where(subjects.c.id.not_in(consented)).limit(1)).scalar_one()
        _add_to_read(conn, read, outsider)
        conn.execute(
            update(records).where(records.c.rid.in_(select(records.c.rid).limit(7))).values(expires_us=to_us(past))
        )
        raw = json.loads(conn.execute(select(datasets.c.schema_json)).scalar_one())
        raw["fields"][5]["category"] = ""
        conn.execute(update(datasets).values(schema_json=json.dumps(raw)))
    _share_under_expired_agreement(ws, "agr-old")
    ws.ledger.checkpoint()
    witness_round(ws, w)
    with ws.store.write() as conn:
        data = bytes(conn.execute(select(ledger_entries.c.data).where(ledger_entries.c.seq == 4)).scalar_one())
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 4).values(data=data + b" "))
    results = _audit(ws, epsilon_cap=0.5)
    assert _failing(results) == {"CONSENT-1", "RET-1", "REQ-1", "DP-1", "DATA-1", "SHARE-1", "LEDGER-1", "RECON-1"}
    named = {k: " ".join(i["item"] + " " + i["problem"] for i in results[k]["items"]) for k in _failing(results)}
    assert f"read at ledger entry {read}" in named["CONSENT-1"]
    assert "7 records past retention" in named["RET-1"]
    assert req["id"] in named["REQ-1"]
    assert model in named["DP-1"]
    assert f"adult.{raw['fields'][5]['name']}" in named["DATA-1"]
    assert "agr-old" in named["SHARE-1"]
    assert "entry 4: stored leaf hash does not match its data" in named["LEDGER-1"]
    assert "its stored schema is not the one registered" in named["RECON-1"]
    assert named["RECON-1"].count("fails authentication") == 7  # the seven expiries moved at rest


def test_a_share_export_leaves_ledger_1_a_warning_naming_the_cosign_command(
    clean: tuple[Workspace, Witness], tmp_path: Path
) -> None:
    """A share export signs a checkpoint for its inclusion proof, which the witness has not cosigned
    yet: evidence missing, nothing inconsistent. LEDGER-1 warns with the command that supplies it
    (it used to fail, critical, with advice to restore from a backup); once cosigned it passes."""
    from complai.crypto.sealing import generate_keypair

    ws, w = clean
    with ws.store.read() as conn:
        home = conn.execute(select(datasets.c.jurisdiction).where(datasets.c.name == "adult")).scalar_one()
    sharer = ws.session(OWNER, "credit_scoring")
    a = sharer.create_agreement(
        "bank", generate_keypair(tmp_path / "bank.key"), "adult", ["age"], recipient_jurisdiction=home
    )
    sharer.export_share(a.id, tmp_path / "p.pkg")
    newest = ws.ledger.latest_checkpoint()
    assert newest is not None
    results = _audit(ws)
    ledger = results["LEDGER-1"]
    assert ledger["status"] == "warning" and ledger["remediation"] is None
    assert [(i["item"], i["problem"], i["cause"]) for i in ledger["items"]] == [
        ("witness w.example", f"has not cosigned the newest checkpoint (size {newest.checkpoint.size})", "not_cosigned")
    ]
    assert "complai ledger witness cosign WITNESS_DIR" in ledger["items"][0]["advice"]
    assert "restore" not in ledger["items"][0]["advice"]
    assert _failing(results) == set()
    assert engine.summary(list(results.values()))["warning"] == 1
    witness_round(ws, w)
    assert _audit(ws)["LEDGER-1"]["status"] == "pass"


def test_no_checkpoint_and_no_witness_are_warnings_with_their_commands(sqlite_ws: Workspace) -> None:
    ledger = _audit(sqlite_ws)["LEDGER-1"]
    assert ledger["status"] == "warning"
    causes = {i["cause"]: i["advice"] for i in ledger["items"]}
    assert set(causes) == {"no_checkpoint", "no_witness"}
    assert "complai ledger checkpoint" in causes["no_checkpoint"]
    assert "complai ledger witness add VKEY" in causes["no_witness"]


def test_an_edited_entry_fails_ledger_1_with_restore_advice_even_beside_missing_evidence(
    sqlite_ws: Workspace,
) -> None:
    ws = sqlite_ws
    with ws.store.write() as conn:
        data = bytes(conn.execute(select(ledger_entries.c.data).where(ledger_entries.c.seq == 0)).scalar_one())
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 0).values(data=data + b" "))
    ledger = _audit(ws)["LEDGER-1"]
    assert ledger["status"] == "fail" and "restore from a verified backup" in ledger["remediation"]
    first = ledger["items"][0]
    assert first["item"] == "ledger" and first["cause"] == "inconsistent" and "restore" in first["advice"]
    assert {i["cause"] for i in ledger["items"][1:]} == {"no_checkpoint", "no_witness"}


def test_a_warning_alone_does_not_fail_the_audit_command(tmp_path: Path) -> None:
    from tests.cli.test_authn import cli

    path = tmp_path / "ws"
    Workspace.init(path).close()  # no checkpoint yet, no witness: LEDGER-1 warns
    r = cli("--workspace", str(path), "audit", "--out", str(tmp_path / "r"), "--format", "json", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["summary"]["warning"] == 1 and doc["summary"]["fail"] == 0
    assert {c["id"]: c["status"] for c in doc["controls"]}["LEDGER-1"] == "warning"
    report = json.loads((tmp_path / "r" / "report.json").read_bytes())
    assert report["scope"]["ledger_size"] == report["metrics"]["ledger entries"]
    ledger = {c["id"]: c for c in report["controls"]}["LEDGER-1"]
    assert ledger["evidence"]["ledger_size"] == report["scope"]["ledger_size"]
    r = cli("--workspace", str(path), "audit", "--out", str(tmp_path / "r2"), "--format", "md")
    assert r.returncode == 0 and "LEDGER-1 warning (checkpoints): no signed checkpoint yet." in r.stdout


def test_the_model_inventory_states_purpose_privacy_utility_and_flags(clean: tuple[Workspace, Witness]) -> None:
    from complai.compliance import report
    from complai.store.tables import model_subjects

    ws, _ = clean
    model = ws.models.list()[0]["model_id"]
    card = ws.models.get(model)["card"]
    with ws.store.read() as conn:
        trained_on = conn.execute(
            select(func.count()).select_from(model_subjects).where(model_subjects.c.model_id == model)
        ).scalar_one()

    def inventory(**kw: float) -> dict:
        ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now(), **kw)
        (entry,) = report.build(ctx, OWNER)["models"]
        return entry

    now = inventory()
    assert (now["id"], now["dataset"], now["purpose"], now["private"]) == (model, "adult", "train_ai_system", True)
    assert now["epsilon"] == card["privacy"]["epsilon"] and now["delta"] == 1e-4  # exact in the JSON
    assert now["utility_metric"] == "accuracy" and now["utility"] == card["utility"]["accuracy"]
    assert now["flags"] == []
    assert inventory(epsilon_cap=0.5)["flags"] == ["epsilon above the cap 0.5"]
    ws.clock.advance(timedelta(days=3660))  # type: ignore[attr-defined]
    assert inventory()["flags"] == [f"trained on {trained_on:,} subjects whose records are past retention"]
    ws.session(OWNER, "administration").retention_sweep()  # deletes them and flags the model instead
    (flag,) = inventory()["flags"]
    assert flag.startswith("flagged for retraining: a training record")
