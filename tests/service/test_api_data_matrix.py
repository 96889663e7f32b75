"""Who may call which dataset, read, DP, model and de-identification route, by built-in role.

The expectations come from the built-in rules (access/authz.py BUILTIN, identity.ROLES), not from what
the service answers: role:owner may do anything (`*`); role:admin may take the `admin` action on every
dataset for every purpose; role:auditor the `audit` action; analyst and steward have no rights of their
own (none is granted here). Then, per operation, the session's rule (app/ops):
- listing datasets asks nothing (each caller sees the datasets it may act on);
- describing one needs any action on it, or oversight (audit or admin): owner, admin, auditor;
- creating, altering and dropping a dataset, and setting a budget, are `admin`: owner, admin;
- ingest, read, DP query and train are their own actions: owner only;
- all budgets of a dataset: `admin` on it or `audit`: owner, admin, auditor; its own budget: `query_dp`
  or `admin` on it, or `audit`: owner, admin, auditor;
- the model registry is `audit`: owner, auditor (not admin); a model's audit is for those who may train
  on its dataset, and only overseers learn that an unknown model does not exist (404, not 403);
- federated runs are for overseers (audit or admin): owner, admin, auditor;
- de-identifying what the caller holds touches no vault data and asks nothing: everyone.
Every 403 is recorded as access.denied naming the caller.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_api_data import API, READ, SCHEMA, csv_bytes, ledger_size, people, schema, wait_job, with_people

ROLES = ("owner", "admin", "analyst", "auditor", "steward")
EVERYONE = set(ROLES)
OVERSEERS = {"owner", "admin", "auditor"}
ADMINS = {"owner", "admin"}

Call = Callable[[TestClient, dict[str, str], str], Any]

TABLE = [{"age": 20 + i % 10, "zip": f"{10000 + i % 3}", "dx": "a" if i % 2 else "b"} for i in range(20)]
WIDER = schema(
    fields=[*SCHEMA["fields"], {"name": "note", "type": "string", "category": "user.behavior", "nullable": True}]
)
SPEC = {"dataset": "people", "label": "segment", "features": ["income"], "target_epsilon": 50.0, "purpose": READ}

# route -> (who gets 2xx, the status the others' allowed callers get instead of 2xx, the call)
ROUTES: dict[str, tuple[set[str], int, Call]] = {
    "list datasets": (EVERYONE, 200, lambda c, h, r: c.get(f"{API}/datasets", headers=h)),
    "get dataset": (OVERSEERS, 200, lambda c, h, r: c.get(f"{API}/datasets/people", headers=h)),
    "create dataset": (
        ADMINS,
        201,
        lambda c, h, r: c.post(f"{API}/datasets", headers=h, json={"definition": schema(f"made_{r}")}),
    ),
    "alter (dry run)": (
        ADMINS,
        200,
        lambda c, h, r: c.put(f"{API}/datasets/people/schema", headers=h, json={"definition": WIDER, "dry_run": True}),
    ),
    "ingest": (
        {"owner"},
        202,
        lambda c, h, r: c.post(
            f"{API}/datasets/people/ingest",
            headers=h,
            data={"mode": "append"},
            files={"file": ("p.csv", csv_bytes(people(1, start=900 + ROLES.index(r))), "text/csv")},
        ),
    ),
    "read records": (
        {"owner"},
        200,
        lambda c, h, r: c.get(f"{API}/datasets/people/records?purpose={READ}&limit=5", headers=h),
    ),
    "dp query": (
        {"owner"},
        200,
        lambda c, h, r: c.post(
            f"{API}/dp/query?purpose={READ}", headers=h, json={"sql": "SELECT COUNT(*) FROM people", "epsilon": 0.1}
        ),
    ),
    "list budgets": (OVERSEERS, 200, lambda c, h, r: c.get(f"{API}/datasets/people/budgets", headers=h)),
    "set budget": (
        ADMINS,
        200,
        lambda c, h, r: c.put(f"{API}/datasets/people/budgets", headers=h, json={"epsilon": 10.0, "delta": 1e-6}),
    ),
    "get budget": (OVERSEERS, 200, lambda c, h, r: c.get(f"{API}/datasets/people/budget?purpose={READ}", headers=h)),
    "train": ({"owner"}, 202, lambda c, h, r: c.post(f"{API}/models/train", headers=h, json={"spec": SPEC})),
    "list models": ({"owner", "auditor"}, 200, lambda c, h, r: c.get(f"{API}/models", headers=h)),
    "get a model (none stored)": (
        {"owner", "auditor"},
        404,
        lambda c, h, r: c.get(f"{API}/models/m-none", headers=h),
    ),
    "audit a model (none stored)": (
        OVERSEERS,
        404,
        lambda c, h, r: c.post(f"{API}/models/m-none/audit", headers=h, json={"shadows": 0}),
    ),
    "federated runs": (OVERSEERS, 200, lambda c, h, r: c.get(f"{API}/federated/runs", headers=h)),
    "deid text": (
        EVERYONE,
        200,
        lambda c, h, r: c.post(
            f"{API}/deid/text?purpose=customer_support", headers=h, json={"texts": ["x@y.org"], "regex_only": True}
        ),
    ),
    "deid table": (
        EVERYONE,
        200,
        lambda c, h, r: c.post(
            f"{API}/deid/table?purpose=research", headers=h, json={"rows": TABLE, "quasi": ["age", "zip"], "k": 2}
        ),
    ),
    "drop dataset": (
        ADMINS,
        200,
        lambda c, h, r: c.delete(f"{API}/datasets/drop_{r}?confirm=drop_{r}", headers=h),
    ),
}


def test_authorisation_matrix(client: TestClient, ws: Workspace, token_for: Callable[..., str]) -> None:
    owner = with_people(ws, 12)
    owner.set_budget("people", 10.0, 1e-6)
    for role in ROLES:
        owner.create_dataset(owner.parse_schema(schema(f"drop_{role}")))
    tokens = {role: token_for(f"p-{role}", role) for role in ROLES}
    auditor = ws.session("owner", "audit")
    got: dict[tuple[str, str], int] = {}
    expected: dict[tuple[str, str], int] = {}
    for route, (allowed, status, call) in ROUTES.items():
        for role in ROLES:
            before = ledger_size(ws)
            r = call(client, bearer(tokens[role]), role)
            got[route, role] = r.status_code
            expected[route, role] = status if role in allowed else 403
            if r.status_code == 403:
                refusals = auditor.ledger_entries(start=before, kind="access.denied")
                assert [json.loads(e.data)["actor"] for e in refusals] == [f"p-{role}"], (route, role)
                assert r.headers["content-type"] == "application/problem+json"
    assert got == expected
    # the analyst and steward see no dataset; the others see what they may act on
    for role in ("analyst", "steward"):
        assert client.get(f"{API}/datasets", headers=bearer(tokens[role])).json() == []
    for job in client.get(f"{API}/jobs", headers=bearer(tokens["owner"])).json():
        done = wait_job(client, tokens["owner"], job["id"])
        assert done["state"] in ("succeeded", "failed"), done
