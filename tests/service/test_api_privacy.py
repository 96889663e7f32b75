"""/api/v1 DP queries, budgets, training, the model registry and audits, and federated runs, through the
ASGI client: answers hold only noisy values and public parameters (as the ledger's dp.query event),
overspending is refused with nothing written, training and audits run as jobs, refusals are recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.errors import PolicyDenied
from tests.service.conftest import bearer
from tests.service.test_api_data import API, READ, denied, events, ledger_size, problem_line, wait_job, with_people

ANSWER_FIELDS = {
    "values",
    "accuracy",
    "epsilon",
    "delta",
    "rho",
    "mechanism",
    "dates",
    "ledger_seq",
    "budget_remaining",
}


def entry(ws: Workspace, seq: int) -> dict[str, Any]:
    (e,) = ws.session("owner", "audit").ledger_entries(start=seq, limit=1)
    assert e.seq == seq
    return dict(json.loads(e.data))


def test_dp_answers_hold_no_exact_count(client: TestClient, ws: Workspace, owner_token: str) -> None:
    owner = with_people(ws, 40)
    owner.set_budget("people", 10.0, 1e-6)
    h = bearer(owner_token)
    exact = 40
    answers = []
    for _ in range(4):
        r = client.post(
            f"{API}/dp/query?purpose={READ}", headers=h, json={"sql": "SELECT COUNT(*) FROM people", "epsilon": 0.05}
        )
        assert r.status_code == 200, r.text
        answers.append(r.json())
    for a in answers:
        assert set(a) <= ANSWER_FIELDS and len(a["values"]) == 1 and set(a["values"]) == set(a["accuracy"])
        event = entry(ws, a["ledger_seq"])
        assert event["type"] == "dp.query" and event["dataset"] == "people"
        # the release and its record agree on the public parameters, and the record holds no value at all
        assert {k: event[k] for k in ("epsilon", "delta", "rho", "mechanism")} == {
            k: a[k] for k in ("epsilon", "delta", "rho", "mechanism")
        }
        assert "rows_used" not in event and "values" not in event
        assert a["budget_remaining"]["epsilon_remaining_at_delta"] == pytest.approx(event["epsilon_remaining"])
    # noise of scale 1/0.05 = 20 on each count: four answers all exact would be a one in a million event
    counts = [next(iter(a["values"].values())) for a in answers]
    assert not all(c == exact for c in counts), counts
    assert len(set(counts)) > 1


def test_a_query_over_the_budget_is_409_and_writes_nothing(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    owner = with_people(ws, 10)
    owner.set_budget("people", 0.5, 1e-6)
    h = bearer(owner_token)
    sql = {"sql": "SELECT COUNT(*) FROM people", "epsilon": 1.0}
    before = ledger_size(ws)
    r = client.post(f"{API}/dp/query?purpose={READ}", headers=h, json=sql)
    assert r.status_code == 409, r.text
    problem_line(r)
    assert ledger_size(ws) == before and not events(ws, "dp.query")
    for bad in (
        {"sql": "SELECT COUNT(*) FROM people", "epsilon": "1"},  # a string is not a number
        {"sql": "SELECT COUNT(*) FROM people", "epsilon": 0},
        {"sql": "DELETE FROM people", "epsilon": 0.1},
        {"sql": "SELECT * FROM people", "epsilon": 0.1},  # not an aggregate
        {"sql": "SELECT COUNT(*) FROM people", "epsilon": 0.1, "noise": "none"},
    ):
        r = client.post(f"{API}/dp/query?purpose={READ}", headers=h, json=bad)
        assert r.status_code == 400, (bad, r.text)
        problem_line(r)
    assert ledger_size(ws) == before
    r = client.post(f"{API}/dp/query?purpose={READ}", headers=h, json={**sql, "sql": "SELECT COUNT(*) FROM nowhere"})
    assert r.status_code == 404
    ana = token_for("ana", "analyst")
    r = client.post(f"{API}/dp/query?purpose={READ}", headers=bearer(ana), json={**sql, "epsilon": 0.1})
    assert r.status_code == 403 and denied(ws)[-1]["actor"] == "ana" and denied(ws)[-1]["action"] == "query_dp"
    assert not events(ws, "dp.query")


def test_budgets_set_list_and_get(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    with_people(ws, 5)
    h = bearer(owner_token)
    r = client.put(f"{API}/datasets/people/budgets", headers=h, json={"epsilon": 3.0, "delta": 1e-6})
    assert r.status_code == 200, r.text
    assert (r.json()["principal"], r.json()["epsilon"]) == ("*", 3.0)
    assert (
        client.put(f"{API}/datasets/people/budgets", headers=h, json={"epsilon": 1, "delta": 1e-6}).status_code == 200
    )
    listed = client.get(f"{API}/datasets/people/budgets", headers=h).json()
    assert [(b["principal"], b["epsilon"]) for b in listed] == [("*", 1.0)]
    own = client.get(f"{API}/datasets/people/budget?purpose={READ}", headers=h).json()
    assert own["epsilon_remaining_at_delta"] == pytest.approx(1.0)
    aud = token_for("aud", "auditor")
    assert client.get(f"{API}/datasets/people/budgets", headers=bearer(aud)).status_code == 200
    before = ledger_size(ws)
    r = client.put(f"{API}/datasets/people/budgets", headers=bearer(aud), json={"epsilon": 9.0, "delta": 1e-6})
    assert r.status_code == 403 and denied(ws)[-1]["actor"] == "aud"
    assert ledger_size(ws) == before + 1  # the refusal, and nothing else
    for bad in (
        {"epsilon": -1.0, "delta": 1e-6},
        {"epsilon": 1.0},
        {"epsilon": 1.0, "delta": 0.0},
        {"epsilon": 1.0, "delta": 5e-324},  # 1/delta overflows: no rho is defined
        {"epsilon": 1.0, "delta": 1e-6, "x": 1},
        {"epsilon": "1", "delta": 1e-6},
    ):
        assert client.put(f"{API}/datasets/people/budgets", headers=h, json=bad).status_code == 400
    r = client.put(
        f"{API}/datasets/people/budgets", headers=h, json={"epsilon": 1.0, "delta": 1e-6, "principal": "nobody"}
    )
    assert r.status_code == 404
    assert client.get(f"{API}/datasets/nowhere/budgets", headers=h).status_code == 404
    assert ledger_size(ws) == before + 1


def test_train_list_card_and_audit_a_model(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    owner = with_people(ws, 200)
    owner.set_budget("people", 10.0, 1e-5)
    h = bearer(owner_token)
    spec = {
        "dataset": "people",
        "label": "segment",
        "features": ["income"],
        "model": "logreg",
        "target_epsilon": 2.0,
        "epochs": 1,
        "batch_size": 64,
        "intended_use": "A test of the service.",
    }
    # refusals come before the job: a principal who may not train, an invalid spec, an unknown dataset
    ana = token_for("ana", "analyst")
    r = client.post(f"{API}/models/train", headers=bearer(ana), json={"spec": spec, "purpose": READ})
    assert r.status_code == 403 and denied(ws)[-1]["action"] == "train"
    # one who may train but not read is refused a run without DP (its card holds exact values) at once
    ws.session("owner", "security").add_rule("ana", "people", "train", READ)
    r = client.post(
        f"{API}/models/train",
        headers=bearer(ana),
        json={"spec": {**{k: v for k, v in spec.items() if k != "target_epsilon"}, "private": False}, "purpose": READ},
    )
    assert r.status_code == 403 and denied(ws)[-1]["action"] == "read", r.text
    for bad in (
        {**spec, "model": "forest"},
        {**spec, "target_epsilon": None},
        {k: v for k, v in spec.items() if k != "dataset"},
    ):
        r = client.post(f"{API}/models/train", headers=h, json={"spec": bad, "purpose": READ})
        assert r.status_code == 400, r.text
    assert (
        client.post(f"{API}/models/train", headers=h, json={"spec": {**spec, "dataset": "nowhere"}}).status_code == 404
    )
    assert client.get(f"{API}/jobs", headers=h).json() == []
    r = client.post(f"{API}/models/train", headers=h, json={"spec": {**spec, "purpose": READ}})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"{API}/jobs/{r.json()['id']}"
    done = wait_job(client, owner_token, r.json()["id"], timeout=120)
    assert done["state"] == "succeeded", done
    model_id = done["result"]["model_id"]
    trained = events(ws, "model.trained")
    assert [e["model_id"] for e in trained] == [model_id] and done["result"]["card"]["privacy"]["private"] is True
    aud = token_for("aud", "auditor")
    listed = client.get(f"{API}/models", headers=bearer(aud)).json()
    assert [m["model_id"] for m in listed] == [model_id] and listed[0]["dataset"] == "people"
    one = client.get(f"{API}/models/{model_id}", headers=bearer(aud)).json()
    assert one["card"]["model_id"] == model_id
    card = client.get(f"{API}/models/{model_id}/card", headers=bearer(aud))
    assert card.status_code == 200 and card.json() == one["card"]
    md = client.get(f"{API}/models/{model_id}/card?format=md", headers=bearer(aud))
    assert md.headers["content-type"].startswith("text/markdown") and model_id in md.text
    assert (
        client.get(f"{API}/models/{model_id}/card", headers={**bearer(aud), "Accept": "text/markdown"}).text == md.text
    )
    assert client.get(f"{API}/models/nope", headers=bearer(aud)).status_code == 404
    assert client.get(f"{API}/models", headers=bearer(ana)).status_code == 403
    # the audit: only for a principal who may train on the model's dataset for its purpose
    r = client.post(f"{API}/models/{model_id}/audit", headers=bearer(aud), json={"shadows": 0})
    assert r.status_code == 403
    assert client.post(f"{API}/models/{model_id}/audit", headers=h, json={"shadows": "0"}).status_code == 400
    r = client.post(f"{API}/models/{model_id}/audit", headers=h, json={"shadows": 0})
    assert r.status_code == 202, r.text
    done = wait_job(client, owner_token, r.json()["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert "report_path" not in done["result"] and done["result"]["ledger_seq"] == events_seq(ws, "model.audited")[-1]


def events_seq(ws: Workspace, kind: str) -> list[int]:
    return [e.seq for e in ws.session("owner", "audit").ledger_entries(kind=kind, limit=1000)]


def record_run(ws: Workspace, run_id: str, rounds: int) -> None:
    server = ws.session("owner", "train_ai_system")
    for i in range(1, rounds + 1):
        server.record_federated_round(
            run_id=run_id,
            round=i,
            sampled=3,
            survivors=3 if i < rounds else 2,
            dropped=0 if i < rounds else 1,
            secure_aggregation=True,
            dp="central",
            noise_multiplier=1.1,
            clip_norm=1.0,
            sample_rate=1.0,
            epsilon=0.5 * i,
            delta=1e-5,
            aggregate_digest="sha256:" + "0" * 64,
        )


def test_federated_runs_are_listed_from_the_ledger(ws: Workspace, token_for: Callable[..., str]) -> None:
    """The session method: every run the ledger recorded, newest first, for those who oversee the workspace."""
    record_run(ws, "run-a", 2)
    record_run(ws, "run-b", 3)
    token_for("aud", "auditor")
    token_for("adm", "admin")
    token_for("ana", "analyst")
    runs = ws.session("aud", "audit").federated_runs()
    assert [(r["run_id"], r["rounds"], r["last_round"]) for r in runs] == [("run-b", 3, 3), ("run-a", 2, 2)]
    assert runs[0]["epsilon"] == 1.5 and runs[0]["clients_dropped"] == 1 and runs[0]["secure_aggregation"] is True
    assert runs[0]["coordinator"] == "owner" and runs[0]["first_seq"] < runs[0]["last_seq"]
    assert ws.session("adm", "administration").federated_runs(limit=1)[0]["run_id"] == "run-b"
    with pytest.raises(PolicyDenied):
        ws.session("ana", "audit").federated_runs()
    assert denied(ws)[-1]["actor"] == "ana"


def test_federated_runs_over_http(client: TestClient, ws: Workspace, token_for: Callable[..., str]) -> None:
    record_run(ws, "run-a", 2)
    aud = token_for("aud", "auditor")
    runs = client.get(f"{API}/federated/runs", headers=bearer(aud)).json()
    assert [(r["run_id"], r["rounds"], r["dp"]) for r in runs] == [("run-a", 2, "central")]
    assert client.get(f"{API}/federated/runs?limit=0", headers=bearer(aud)).status_code == 400
    r = client.get(f"{API}/federated/runs", headers=bearer(token_for("ana", "analyst")))
    assert r.status_code == 403 and denied(ws)[-1]["actor"] == "ana"
