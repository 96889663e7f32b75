"""The console's registry pages, through the ASGI client: datasets, principals and policy, budgets,
models, agreements and audits render for an auditor with what the setup made (numbers derived here,
from the setup, not from the code under test); a person without the role gets the not-allowed page
(403, recorded); forms need the CSRF token; no secret and no subject id reaches a page."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.sealing import generate_keypair
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.service.app import create_app
from complai.service.console.web import COOKIE, csrf_token
from complai.store.tables import model_subjects, principals, subjects
from complai.vault.schema import load_schema
from tests.service.conftest import settings_for

PASSWORD = "correct horse battery"
ROWS = 160
ERASED = 3  # training subjects of the model, erased to flag it
DATASET_EPSILON, DATASET_DELTA = 4.0, 1e-3
ANA_EPSILON, ANA_DELTA, ANA_QUERY = 2.0, 1e-4, 0.5
SPEC = {
    "label": "income",
    "model": "logreg",
    "epochs": 1,
    "batch_size": 64,
    "target_epsilon": 0.99,
    "delta": 1e-4,
    "accountant": "rdp",
    "intended_use": "Screening demo for the registry page",
    "limitations": ["Trained on a hundred-odd rows; not for decisions"],
}


@dataclass
class Setup:
    ws: Workspace
    app: object
    subjects: list[str]
    erased: list[str]
    consents: pd.DataFrame
    model_id: str
    agreement_id: str
    ana_token: str
    secrets: list[str]


def build(tmp: Path) -> Setup:
    """A small workspace with something on every registry page: principals, a rule, tokens, the first
    rows of Adult with consents, budgets, a DP query, a trained and audited model flagged by erasures,
    and an agreement with one share."""
    ws = Workspace.init(tmp / "ws", clock=ManualClock())
    try:
        owner = ws.session(OWNER, "security")
        for name, kind, roles in (("dana", "human", ["auditor"]), ("nobody", "human", []), ("ana", "service", [])):
            owner.add_principal(name, kind, PASSWORD if kind == "human" else None)
            for role in roles:
                owner.grant_role(name, role)
        owner.add_rule("ana", "adult", "query_dp", "analytics")
        ana_token = owner.create_token("ana", "P1D").token
        owner.revoke_token(owner.create_token("ana", "P1D").id)

        admin = ws.session(OWNER, "administration")
        admin.create_dataset(load_schema(adult_schema_path(), ws.taxonomy))
        df = load_adult("train").head(ROWS).drop(columns=["split"], errors="ignore")
        consents = adult_consents(df["subject_id"], now=ws.clock.now())
        admin.ingest("adult", df, consents)
        admin.set_budget("adult", DATASET_EPSILON, DATASET_DELTA)
        admin.set_budget("adult", ANA_EPSILON, ANA_DELTA, principal="ana")

        ws.session(ana_token, "analytics").dp_query("SELECT COUNT(*) FROM adult", ANA_QUERY)
        trainer = ws.session(OWNER, "train_ai_system")
        model_id = str(trainer.train("adult", **SPEC)["model_id"])
        trainer.audit_model(model_id, shadows=2)
        # the split is keyed by the workspace's pseudonyms: ask the registry which subjects trained it
        by_pseudonym = {ws.services.pseudonyms.subject(str(x)): str(x) for x in df["subject_id"]}
        with ws.services.store.read() as conn:
            trained = conn.execute(
                select(subjects.c.pseudonym)
                .join(model_subjects, model_subjects.c.subject_id == subjects.c.id)
                .where(model_subjects.c.model_id == model_id)
            ).scalars()
            erased = sorted(by_pseudonym[p] for p in trained)[:ERASED]
        rights = ws.session(OWNER, "subject_request")
        for subject in erased:
            rights.erase_subject(subject)

        sharer = ws.session(OWNER, "research")
        public = generate_keypair(tmp / "lab.key")
        agreement = sharer.create_agreement(
            "lab",
            public,
            "adult",
            ["age", "education"],
            max_uses=2,
            recipient_jurisdiction="US",
            transfer_mechanism="scc",
        )
        sharer.export_share(agreement.id, tmp / "share.cpkg")

        with ws.services.store.read() as conn:  # the stored password hashes, to prove no page shows them
            hashes = [str(h) for h in conn.execute(select(principals.c.password_hash)).scalars() if h]
        app = create_app(settings_for(ws), workspace=ws)
        everyone = list(df["subject_id"])
        return Setup(ws, app, everyone, erased, consents, model_id, agreement.id, ana_token, [ana_token, *hashes])
    except BaseException:
        ws.close()
        raise


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    built = build(tmp_path_factory.mktemp("console-registry"))
    try:
        yield built
    finally:
        built.ws.close()


@pytest.fixture(scope="module")
def dana(setup: Setup) -> Iterator[TestClient]:
    """The auditor, logged in with her password."""
    with TestClient(setup.app, raise_server_exceptions=False) as c:
        r = c.post("/console/login", data={"username": "dana", "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 303
        setup.secrets.append(c.cookies[COOKIE])
        yield c


def page(client: TestClient, setup: Setup, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    html = r.text
    for secret in setup.secrets:
        assert secret not in html
    assert not re.search(r"A0000\d{4}", html), "a subject id reached the page"
    assert "$argon2" not in html
    return html


def cells(html: str, row_class: str) -> list[list[str]]:
    """The text of each cell of each table row of `row_class`."""
    rows = re.findall(rf'<tr class="{row_class}[^"]*">(.*?)</tr>', html, re.S)
    return [[re.sub(r"<[^>]+>|\s+", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


# --- pages -----------------------------------------------------------------------------------------


def test_datasets_list_and_detail(dana: TestClient, setup: Setup) -> None:
    html = page(dana, setup, "/console/datasets")
    assert 'href="/console/datasets/adult"' in html
    (row,) = [r for r in cells(html, "reg-dataset") if r[0].startswith("adult")]
    assert row[1] == f"{ROWS - ERASED:,}" and row[2] == f"{ROWS - ERASED:,}"

    html = page(dana, setup, "/console/datasets/adult")
    for text in ("credit_scoring", "gdpr.art9.explicit_consent", "Version history", "<code>age</code>", "P3650D"):
        assert text in html
    fields = {r[0]: r for r in cells(html, "reg-field")}
    assert fields["age"][1:5] == ["integer", "user.demographic.age", "quasi", ""] and fields["age"][6] == "17 to 90"
    assert fields["fnlwgt"][6] == "0 to 1,500,000" and fields["race"][4] == "yes"
    # consent coverage per purpose, derived from the consents the setup ingested
    live = setup.consents[setup.consents["withdrawn_at"].isna() & ~setup.consents["subject"].isin(setup.erased)]
    people = ROWS - ERASED
    coverage = {r[0]: r for r in cells(html, "reg-coverage")}
    for purpose in ("credit_scoring", "train_ai_system", "federated_training"):
        consented = live[live["purpose"] == purpose]["subject"].nunique()
        assert coverage[purpose][3:5] == [f"{people:,}", f"{consented:,}"], purpose
        assert coverage[purpose][2] == "yes"
    assert coverage["analytics"][2] == "no"


def test_principals_and_rules(dana: TestClient, setup: Setup) -> None:
    html = page(dana, setup, "/console/principals")
    rows = {r[0]: r for r in cells(html, "reg-principal")}
    assert rows["dana"][1:4] == ["human", "auditor", "enabled"]
    assert rows["ana"][1] == "service" and rows["ana"][2] == "none"
    assert rows["ana"][4:] == ["1", "0", "1"]  # one live token, one revoked
    assert ["role:auditor", "*", "audit", "*", "allow"] in [r[1:] for r in cells(html, "reg-builtin")]
    assert ["ana", "adult", "query_dp", "analytics", "allow"] in [r[1:] for r in cells(html, "reg-rule")]


def test_budgets_with_burn_down(dana: TestClient, setup: Setup) -> None:
    html = page(dana, setup, "/console/budgets")
    rows = {r[0]: r for r in cells(html, "reg-budget-row")}
    assert rows["the dataset"][1:3] == [f"{DATASET_EPSILON:g}", f"{DATASET_DELTA:g}"]
    assert rows["ana"][1:5] == [f"{ANA_EPSILON:g}", f"{ANA_DELTA:g}", f"{ANA_QUERY:g}", f"{ANA_EPSILON - ANA_QUERY:g}"]
    assert rows["ana"][5] == f"{round(100 * ANA_QUERY / ANA_EPSILON)}%"
    # burn-downs, drawn without inline style: the dataset's has a point per spend (the query and the
    # training run), ana's one, where her query left her what her budget less its cost is
    dataset_chart = html.split('<div class="reg-burn">', 1)[1].split("</figure>", 1)[0]
    assert dataset_chart.count('class="reg-dot"') == 2 and "<polyline" in dataset_chart
    ana_chart = html.split('id="burn-adult-ana"', 1)[1].split("</figure>", 1)[0]
    assert ana_chart.count('class="reg-dot"') == 1
    assert f"ε left {ANA_EPSILON - ANA_QUERY:g}</title>" in ana_chart
    spends = cells(html, "reg-spend")
    assert [(r[2], r[3], r[4]) for r in spends] == [
        ("ana", "analytics", "query"),
        ("owner", "train_ai_system", "training or release"),
    ]
    assert spends[0][6] == f"{ANA_QUERY:g}" and spends[0][7] == f"{DATASET_EPSILON - ANA_QUERY:g}"
    assert "style=" not in html and "<script" not in html


def test_models_list_and_card(dana: TestClient, setup: Setup) -> None:
    html = page(dana, setup, "/console/models")
    (row,) = cells(html, "reg-model")
    assert row[0] == setup.model_id and row[1] == "adult" and row[2] == "train_ai_system"
    assert float(row[4]) <= SPEC["target_epsilon"] and row[8].startswith("flagged")

    html = page(dana, setup, f"/console/models/{setup.model_id}")
    for text in (
        SPEC["intended_use"],
        SPEC["limitations"][0],
        "accountant rdp",
        "Fairness",
        "Flagged: a training subject was erased",
    ):
        assert text in html
    (audit,) = cells(html, "reg-mia")
    assert audit[6] == "2"  # the shadow models the setup's audit trained
    assert dana.get("/console/models/m-000000000000").status_code == 404


def test_agreements_and_shares(dana: TestClient, setup: Setup) -> None:
    html = page(dana, setup, "/console/agreements")
    assert setup.agreement_id in html and "lab" in html
    for text in ("age, education", "research", "US", "scc", "1 of 2"):
        assert text in html
    (share,) = cells(html, "reg-share")
    assert share[0] == "1" and share[4] == f"{ROWS - ERASED:,}"


def test_an_audit_runs_as_a_job_is_listed_read_and_verified(dana: TestClient, setup: Setup) -> None:
    token = dana.cookies[COOKIE]
    # under no-referrer a browser would send its forms with `Origin: null`, which the CSRF check refuses
    assert dana.get("/console/audits").headers["referrer-policy"] == "same-origin"
    r = dana.post("/console/audits", data={"csrf": csrf_token(token)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/audits"
    seq = None
    deadline = time.monotonic() + 60
    while seq is None and time.monotonic() < deadline:
        m = re.search(r'<a href="/console/audits/(\d+)">audit \d+</a>', page(dana, setup, "/console/audits"))
        seq = int(m.group(1)) if m else time.sleep(0.2)
    assert seq is not None, "the audit job did not finish"
    html = page(dana, setup, "/console/audits")
    newest = cells(html, "reg-audit")[0]
    assert newest[0] == str(seq) and newest[2] == "dana" and newest[8] == "on the server"

    html = page(dana, setup, f"/console/audits/{seq}")
    assert "Verify the report against the ledger" in html and "sandbox" in html
    assert {c[0] for c in cells(html, "reg-control")} >= {"RECON-1"}
    report = dana.get(f"/console/audits/{seq}/report")
    assert report.status_code == 200 and "compliance audit" in report.text
    csp = report.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp

    html = dana.post(f"/console/audits/{seq}/verify", data={"csrf": csrf_token(token)}).text
    assert "Verified:" in html and f"ledger entry {seq} records" in html
    # a report changed on the server fails verification, and the page says so
    stored = Path(setup.ws.path) / "audits" / str(seq) / "report.json"
    stored.write_bytes(stored.read_bytes().replace(b'"generated_by":"dana"', b'"generated_by":"eve"'))
    html = dana.post(f"/console/audits/{seq}/verify", data={"csrf": csrf_token(token)}).text
    assert "Verification failed" in html and "Verified:" not in html


# --- refusals ----------------------------------------------------------------------------------------


def denials(ws: Workspace, actor: str) -> int:
    entries = ws.session(OWNER, "audit").ledger_entries(kind="access.denied", limit=10_000)
    return sum(1 for e in entries if json.loads(e.data)["actor"] == actor)


def test_a_person_without_the_role_gets_the_not_allowed_page(setup: Setup) -> None:
    paths = [
        "/console/datasets/adult",
        "/console/datasets/nothing",  # refused before the lookup: the same page whether or not it exists
        "/console/principals",
        "/console/budgets",
        "/console/models",
        f"/console/models/{setup.model_id}",
        "/console/agreements",
        "/console/audits",
        "/console/audits/1",
        "/console/audits/1/report",
    ]
    with TestClient(setup.app, raise_server_exceptions=False) as c:
        c.post("/console/login", data={"username": "nobody", "password": PASSWORD})
        pages = set()
        for path in paths:
            before = denials(setup.ws, "nobody")
            r = c.get(path)
            assert r.status_code == 403 and "Not allowed" in r.text, path
            assert denials(setup.ws, "nobody") == before + 1, path
            if path.startswith("/console/datasets/"):
                pages.add(r.text.replace("nothing", "NAME").replace("adult", "NAME"))
        assert len(pages) == 1


def test_the_dataset_list_shows_only_what_a_person_may_act_on(setup: Setup) -> None:
    with TestClient(setup.app, raise_server_exceptions=False) as c:
        c.post("/console/login", data={"username": "nobody", "password": PASSWORD})
        r = c.get("/console/datasets")
        assert r.status_code == 200 and "No dataset you may act on" in r.text and "adult" not in r.text


def test_running_an_audit_needs_the_role_and_the_csrf_token(setup: Setup, dana: TestClient) -> None:
    audits = setup.ws.session(OWNER, "audit")

    def recorded() -> int:
        return len(audits.ledger_entries(kind="compliance.audited", limit=10_000)) + len(audits.jobs(limit=1000))

    before = recorded()
    assert dana.post("/console/audits", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    r = dana.post(
        "/console/audits",
        data={"csrf": csrf_token(dana.cookies[COOKIE])},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert dana.post("/console/audits/1/verify", data={}, follow_redirects=False).status_code == 403
    with TestClient(setup.app, raise_server_exceptions=False) as c:
        c.post("/console/login", data={"username": "nobody", "password": PASSWORD})
        denied = denials(setup.ws, "nobody")
        r = c.post("/console/audits", data={"csrf": csrf_token(c.cookies[COOKIE])}, follow_redirects=False)
        assert r.status_code == 403 and "Not allowed" in r.text
        assert denials(setup.ws, "nobody") == denied + 1
    assert recorded() == before
