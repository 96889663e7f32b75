"""`complai --server URL` for the everyday commands: governed reads, ingest by upload (a job followed to
its end), budgets, models, the ledger, audits, requests, incidents, DPIAs, RoPA, principals and tokens,
against a real `complai serve` process. Outputs are checked against what the test set up."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_remote import cli, one_line_error
from tests.service.live import COMPLAI, Server, add_token, bearer, child_env, prepare_workspace, serving


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("remote-commands")
    token = prepare_workspace(root / "ws", rows=120)
    with serving(root / "ws") as server:
        yield server, token


def counts(server: Server, token: str) -> dict[str, int]:
    doc = httpx.get(f"{server.url}/api/v1/ledger", headers=bearer(token)).json()
    by_type: dict[str, int] = doc["entries_by_type"]
    return by_type


def ok(done: object) -> None:
    assert getattr(done, "returncode", None) == 0, getattr(done, "stderr", done)


def test_read_pages_to_a_private_file_never_overwritten(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    before = counts(server, token).get("vault.read", 0)
    held = httpx.get(f"{server.url}/api/v1/datasets/adult", headers=bearer(token)).json()["records"]
    assert held >= 101  # set up with 120 rows (other tests may add or erase a few): three pages of 50
    out = tmp_path / "adult.csv"
    done = cli("dataset", "read", "adult", "--purpose", "analytics", "--page-size", "50", "--out", str(out),
               server=server.url, token=token)  # fmt: skip
    ok(done)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == held and len({r["subject_id"] for r in rows}) == held  # one header, no row twice
    assert counts(server, token)["vault.read"] == before + 3
    again = cli("dataset", "read", "adult", "--purpose", "analytics", "--out", str(out),
                server=server.url, token=token)  # fmt: skip
    assert again.returncode == 2 and "already exists" in one_line_error(again)
    assert counts(server, token)["vault.read"] == before + 3  # refused before anything was read
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == held


def test_read_as_json_with_a_limit(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("dataset", "read", "adult", "--purpose", "analytics", "--format", "json", "--limit", "7",
               "--columns", "age", server=server.url, token=token)  # fmt: skip
    ok(done)
    doc = json.loads(done.stdout)
    assert doc["dataset"] == "adult" and doc["purpose"] == "analytics"
    assert doc["returned"] == 7 and len(doc["rows"]) == 7 and len(doc["ledger_seqs"]) == 1
    assert all(set(row) <= {"age", "subject_id"} and "age" in row for row in doc["rows"])


def test_a_read_refused_by_the_server_is_exit_2_and_recorded(live: tuple[Server, str]) -> None:
    server, token = live
    stranger = add_token(server.workspace, "remote-stranger")  # no role: may read nothing
    before = counts(server, token).get("access.denied", 0)
    done = cli("dataset", "read", "adult", "--purpose", "analytics", server=server.url, token=stranger)
    assert done.returncode == 2
    one_line_error(done)
    assert done.stdout == ""
    assert counts(server, token)["access.denied"] == before + 1
    assert stranger.split("_")[-1] not in done.stderr


def test_ingest_uploads_follows_the_job_and_prints_the_result(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    data = tmp_path / "more.csv"
    data.write_text("subject_id,age\nR1,41\nR2,42\nR3,43\n")
    done = cli("dataset", "ingest", "adult", str(data), "--mode", "append", "--json", server=server.url, token=token)
    ok(done)
    result = json.loads(done.stdout)
    assert result["rows"] == 3 and result["new_subjects"] == 3 and result["dataset"] == "adult"
    assert isinstance(result["seq"], int)
    text = cli("dataset", "ingest", "adult", str(data), "--mode", "append", server=server.url, token=token)
    ok(text)
    assert "ingested 0 rows" in text.stdout and "skipped 3 rows whose record is stored already" in text.stdout
    queued = cli("dataset", "ingest", "adult", str(data), "--mode", "append", "--no-wait",
                 server=server.url, token=token)  # fmt: skip
    ok(queued)
    job_id = queued.stdout.strip()
    shown = cli("job", "show", job_id, "--json", server=server.url, token=token)
    ok(shown)
    assert json.loads(shown.stdout)["kind"] == "dataset.ingest"
    bad = cli("dataset", "ingest", "adult", str(data), "--mode", "sideways", server=server.url, token=token)
    assert bad.returncode == 2 and "--mode" in one_line_error(bad)


def test_a_failed_ingest_job_is_one_line(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    data = tmp_path / "bad.csv"
    data.write_text("subject_id,age\nB1,not-a-number\n")
    done = cli("dataset", "ingest", "adult", str(data), server=server.url, token=token)
    assert done.returncode == 2, done.stderr
    assert "job " in one_line_error(done)


def test_dp_budget_shows_and_sets(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("dp", "budget", "adult", "--set", "77", "0.0001", "--json", server=server.url, token=token)
    ok(done)
    rows = json.loads(done.stdout)
    mine = [b for b in rows if b["principal"] == "*"]
    assert mine and mine[0]["epsilon"] == 77 and mine[0]["delta"] == 0.0001
    text = cli("dp", "budget", "adult", server=server.url, token=token)
    ok(text)
    assert "77" in text.stdout


def test_models_none_yet(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("model", "list", "--json", server=server.url, token=token)
    ok(done)
    assert json.loads(done.stdout) == []
    missing = cli("model", "card", "nosuchmodel", server=server.url, token=token)
    assert missing.returncode == 2
    one_line_error(missing)


def test_ledger_show_prove_verify(live: tuple[Server, str]) -> None:
    server, token = live
    done = cli("ledger", "show", "--type", "vault.ingested", "--json", server=server.url, token=token)
    ok(done)
    entries = json.loads(done.stdout)
    assert entries and all(e["type"] == "vault.ingested" for e in entries)
    seq = entries[0]["seq"]
    proof = cli("ledger", "prove", str(seq), server=server.url, token=token)
    ok(proof)
    doc = json.loads(proof.stdout)
    assert doc["seq"] == seq and doc["tree_size"] > seq and doc["checkpoint"]
    verified = cli("ledger", "verify", "--json", server=server.url, token=token)
    ok(verified)
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["size"] >= seq + 1


def test_audit_runs_on_the_server_and_writes_reports_here(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    out = tmp_path / "audit"
    done = cli("audit", "--out", str(out), "--format", "json,md", "--json", server=server.url, token=token)
    assert done.returncode in (0, 1), done.stderr
    doc = json.loads(done.stdout)
    assert set(doc["files"]) == {"json", "md"}
    report = json.loads((out / "report.json").read_text())
    assert [c["id"] for c in report["controls"]] == [c["id"] for c in doc["controls"]]
    assert stat.S_IMODE((out / "report.md").stat().st_mode) == 0o600
    assert done.returncode == (1 if doc["summary"]["fail"] else 0)
    listed = cli("audit", "list", "--json", server=server.url, token=token)
    ok(listed)
    assert doc["ledger_seq"] in [a["seq"] for a in json.loads(listed.stdout)]
    again = cli("audit", "--out", str(out), "--format", "json", server=server.url, token=token)
    assert again.returncode == 2 and "exists" in one_line_error(again)
    verified = cli("audit", "verify", str(out / "report.json"), "--json", server=server.url, token=token)
    ok(verified)
    assert json.loads(verified.stdout)["ledger_seq"] == doc["ledger_seq"]


def test_requests_incidents_dpia_ropa(live: tuple[Server, str]) -> None:
    server, token = live
    opened = cli("request", "open", "--type", "access", "--subject", "R1", "--jurisdiction", "EU", "--json",
                 server=server.url, token=token)  # fmt: skip
    ok(opened)
    rid = json.loads(opened.stdout)["id"]
    listed = cli("request", "list", "--json", server=server.url, token=token)
    ok(listed)
    assert rid in [r["id"] for r in json.loads(listed.stdout)]
    verified = cli("request", "verify", rid, "--method", "document", "--json", server=server.url, token=token)
    ok(verified)
    assert json.loads(verified.stdout)["verified"]
    no_out = cli("request", "fulfil", rid, "--subject", "R1", server=server.url, token=token)
    assert no_out.returncode == 2 and "--out" in one_line_error(no_out)
    shown = cli("request", "show", rid, server=server.url, token=token)
    ok(shown)
    assert rid in shown.stdout and "identity verified" in " ".join(shown.stdout.split())

    inc = cli("incident", "open", "--description", "laptop lost", "--json", server=server.url, token=token)
    ok(inc)
    iid = json.loads(inc.stdout)["id"]
    incidents = cli("incident", "list", "--json", server=server.url, token=token)
    ok(incidents)
    assert [i["description"] for i in json.loads(incidents.stdout) if i["id"] == iid] == ["laptop lost"]

    dpia = cli("dpia", "generate", "adult", "--json", server=server.url, token=token)
    ok(dpia)
    assert json.loads(dpia.stdout)["version"] == 1
    st = cli("dpia", "status", "adult", "--json", server=server.url, token=token)
    ok(st)
    assert json.loads(st.stdout)["current"] is False

    ropa = cli("ropa", "--json", server=server.url, token=token)
    ok(ropa)
    assert "analytics" in [r["purpose"] for r in json.loads(ropa.stdout) if r["dataset"] == "adult"]


def test_principals_and_tokens_never_print_another_secret(live: tuple[Server, str]) -> None:
    server, token = live
    add_token(server.workspace, "remote-auditor", "auditor")
    principals = cli("principal", "list", "--json", server=server.url, token=token)
    ok(principals)
    by_name = {p["name"]: p for p in json.loads(principals.stdout)}
    assert by_name["remote-auditor"]["roles"] == ["auditor"]
    made = cli("token", "create", "--principal", "remote-auditor", "--expires", "PT1H", "--json",
               server=server.url, token=token)  # fmt: skip
    ok(made)
    issued = json.loads(made.stdout)
    assert issued["token"].startswith("cpl_") and token not in made.stdout + made.stderr
    listed = cli("token", "list", "--principal", "remote-auditor", "--json", server=server.url, token=token)
    ok(listed)
    assert issued["id"] in [t["id"] for t in json.loads(listed.stdout)]
    assert issued["token"] not in listed.stdout and token not in listed.stdout
    me = httpx.get(f"{server.url}/api/v1/me", headers=bearer(issued["token"]))
    assert me.status_code == 200 and me.json()["principal"] == "remote-auditor"
    revoked = cli("token", "revoke", issued["id"], server=server.url, token=token)
    ok(revoked)
    assert f"revoked token {issued['id']}" in revoked.stdout
    assert httpx.get(f"{server.url}/api/v1/me", headers=bearer(issued["token"])).status_code == 401
    refused = cli("token", "create", "--principal", "owner", server=server.url, token=add_token(
        server.workspace, "remote-analyst2", "analyst"))  # fmt: skip
    assert refused.returncode == 2
    assert "cpl_" not in one_line_error(refused)


def test_commands_that_run_only_on_the_workspace_still_refuse(live: tuple[Server, str]) -> None:
    server, token = live
    for args in (["witness", "init", "w", "--name", "w.example/1"], ["quickstart"], ["backup", "restore", "x.bak"]):
        done = cli(*args, server=server.url, token=token)
        assert done.returncode == 2, done
        assert "no remote form" in one_line_error(done)


def local(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command's local form, on the server's workspace."""
    return subprocess.run(
        [COMPLAI, "--workspace", str(server.workspace), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("ledger", "show", "--from", "1", "--limit", "4", "--json"),
        ("principal", "list", "--json"),
        ("dataset", "show", "adult", "--json"),
        ("ropa", "--json"),
        ("model", "list", "--json"),
    ],
)
def test_remote_json_is_the_local_json(live: tuple[Server, str], args: tuple[str, ...]) -> None:
    server, token = live
    there = cli(*args, server=server.url, token=token)
    ok(there)
    here = local(server, *args)
    ok(here)
    assert json.loads(there.stdout) == json.loads(here.stdout)


def test_ledger_verify_as_text(live: tuple[Server, str]) -> None:
    server, token = live
    before = httpx.get(f"{server.url}/api/v1/ledger", headers=bearer(token)).json()["size"]
    done = cli("ledger", "verify", server=server.url, token=token)
    ok(done)
    m = re.search(r"ledger intact: (\d+) entries", " ".join(done.stdout.split()))
    assert m is not None, done.stdout
    after = httpx.get(f"{server.url}/api/v1/ledger", headers=bearer(token)).json()["size"]
    assert before <= int(m.group(1)) <= after


def test_subject_rights_consents_keys_retention(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    read = cli("dataset", "read", "adult", "--purpose", "credit_scoring", "--format", "json",
               server=server.url, token=token)  # fmt: skip
    ok(read)
    subject = json.loads(read.stdout)["rows"][0]["subject_id"]
    out = tmp_path / "export.json"
    exported = cli("subject", "export", subject, "--out", str(out), server=server.url, token=token)
    ok(exported)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert subject in out.read_text()
    withdrawn = cli("consent", "withdraw", subject, "--purpose", "credit_scoring", server=server.url, token=token)
    ok(withdrawn)
    assert "consent for credit_scoring withdrawn (ledger entry" in withdrawn.stdout
    after = cli("dataset", "read", "adult", "--purpose", "credit_scoring", "--format", "json",
                server=server.url, token=token)  # fmt: skip
    ok(after)
    assert subject not in [row["subject_id"] for row in json.loads(after.stdout)["rows"]]
    erased = cli("subject", "erase", subject, "--json", server=server.url, token=token)
    ok(erased)
    assert json.loads(erased.stdout)["erased"] is True
    keys = cli("keys", "status", "--json", server=server.url, token=token)
    ok(keys)
    assert json.loads(keys.stdout) == json.loads(local(server, "keys", "status", "--json").stdout)
    swept = cli("retention", "sweep", "--json", server=server.url, token=token)
    ok(swept)
    assert json.loads(swept.stdout)["records_deleted"] == 0  # nothing here is past its ten years


def test_roles_granted_remotely_and_refused_to_a_non_owner(live: tuple[Server, str]) -> None:
    server, token = live
    added = cli("principal", "add", "remote-steward", "--kind", "service", server=server.url, token=token)
    ok(added)
    granted = cli("role", "grant", "steward", "--principal", "remote-steward", server=server.url, token=token)
    ok(granted)
    principals = json.loads(local(server, "principal", "list", "--json").stdout)
    assert [p["roles"] for p in principals if p["name"] == "remote-steward"] == [["steward"]]
    analyst = add_token(server.workspace, "remote-analyst3", "analyst")
    before = counts(server, token).get("access.denied", 0)
    refused = cli("role", "grant", "owner", "--principal", "remote-analyst3", server=server.url, token=analyst)
    assert refused.returncode == 2
    one_line_error(refused)
    assert counts(server, token)["access.denied"] == before + 1
    principals = json.loads(local(server, "principal", "list", "--json").stdout)
    assert [p["roles"] for p in principals if p["name"] == "remote-analyst3"] == [["analyst"]]


def test_train_on_the_server_then_cards_and_an_audit(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "dataset: adult\nlabel: income\nfeatures: [age, hours_per_week]\nmodel: logreg\ntarget_epsilon: 2.0\n"
        "epochs: 1\nbatch_size: 32\npurpose: credit_scoring\nintended_use: A test of the remote command line.\n"
    )
    trained = cli("train", str(spec), "--json", server=server.url, token=token)
    ok(trained)
    card = json.loads(trained.stdout)
    model_id = card["model_id"]
    assert card["privacy"]["private"] is True and card["privacy"]["epsilon"] <= 2.0 + 1e-9
    listed = cli("model", "list", "--json", server=server.url, token=token)
    ok(listed)
    assert model_id in [m["model_id"] for m in json.loads(listed.stdout)]
    md = cli("model", "card", model_id, server=server.url, token=token)
    ok(md)
    assert model_id in md.stdout
    as_json = cli("model", "card", model_id, "--format", "json", server=server.url, token=token)
    ok(as_json)
    assert json.loads(as_json.stdout) == json.loads(local(server, "model", "card", model_id, "--format", "json").stdout)
    shown = cli("model", "show", model_id, server=server.url, token=token)
    ok(shown)
    assert f"model {model_id}" in shown.stdout
    audited = cli("model", "audit", model_id, "--shadows", "0", "--json", server=server.url, token=token)
    ok(audited)
    report = json.loads(audited.stdout)
    audits = cli("ledger", "show", "--type", "model.audited", "--json", server=server.url, token=token)
    ok(audits)
    assert report["shadow_models"] == 0 and report["ledger_seq"] in [e["seq"] for e in json.loads(audits.stdout)]


def test_policy_and_taxonomy(live: tuple[Server, str]) -> None:
    server, token = live
    made = cli("policy", "allow", "role:analyst", "--dataset", "adult", "--action", "read", "--purpose", "research",
               "--json", server=server.url, token=token)  # fmt: skip
    ok(made)
    rule = json.loads(made.stdout)
    assert rule["domain"] == "adult" and rule["effect"] == "allow"
    shown = cli("policy", "show", "--json", server=server.url, token=token)
    ok(shown)
    assert json.loads(shown.stdout) == json.loads(local(server, "policy", "show", "--json").stdout)
    removed = cli("policy", "remove", str(rule["id"]), server=server.url, token=token)
    ok(removed)
    assert rule["id"] not in [r["id"] for r in json.loads(local(server, "policy", "show", "--json").stdout)["rules"]]
    for args in (("taxonomy", "list", "--json"), ("taxonomy", "list", "bases", "--json")):
        there = cli(*args, server=server.url, token=token)
        ok(there)
        assert json.loads(there.stdout) == json.loads(local(server, *args).stdout)


PEOPLE = """\
name: remote_people
subject_column: customer_id
jurisdiction: EU
retention: P365D
purposes:
  fraud_detection: gdpr.legitimate_interests
fields:
  - {name: customer_id, type: string, category: user.unique_id, identifier: direct}
  - {name: income, type: integer, category: user.financial.income, min: 0, max: 1000000}
"""


def test_dataset_create_alter_drop(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    schema = tmp_path / "people.yaml"
    schema.write_text(PEOPLE)
    wrong = cli("dataset", "create", "other_name", "--schema", str(schema), server=server.url, token=token)
    assert wrong.returncode == 2 and "not 'other_name'" in one_line_error(wrong)
    made = cli("dataset", "create", "remote_people", "--schema", str(schema), "--json", server=server.url, token=token)
    ok(made)
    assert json.loads(made.stdout) == {
        "dataset": "remote_people",
        "fields": 2,
        "purposes": {"fraud_detection": "gdpr.legitimate_interests"},
    }
    wider = tmp_path / "wider.yaml"
    wider.write_text(PEOPLE.replace("max: 1000000", "max: 2000000"))
    dry = cli("dataset", "alter", "remote_people", "--schema", str(wider), "--dry-run", "--json",
              server=server.url, token=token)  # fmt: skip
    ok(dry)
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] is True and doc["from_version"] == 1 and doc["version"] == 2 and doc["ledger_seq"] is None
    shown = json.loads(local(server, "dataset", "show", "remote_people", "--json").stdout)
    assert shown["schema_version"] == 1  # a dry run changes nothing
    unconfirmed = cli("dataset", "drop", "remote_people", server=server.url, token=token)
    assert unconfirmed.returncode == 2 and "--yes" in one_line_error(unconfirmed)
    dropped = cli("dataset", "drop", "remote_people", "--yes", "--json", server=server.url, token=token)
    ok(dropped)
    assert json.loads(dropped.stdout)["records_deleted"] == 0


def test_witness_and_backup(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    made = local(server, "ledger", "witness", "init", str(tmp_path / "w"), "--name", "witness.example/remote")
    ok(made)
    vkey = made.stdout.strip()
    added = cli("ledger", "witness", "add", vkey, server=server.url, token=token)
    ok(added)
    assert "trusting witness witness.example/remote" in added.stdout
    listed = cli("ledger", "witness", "list", "--json", server=server.url, token=token)
    ok(listed)
    assert vkey in json.loads(listed.stdout)
    backup = tmp_path / "ws.backup"
    done = cli("backup", "create", str(backup), "--json", server=server.url, token=token)
    ok(done)
    doc = json.loads(done.stdout)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and backup.stat().st_size > 1000
    recorded = cli("ledger", "show", "--type", "backup.created", "--json", server=server.url, token=token)
    ok(recorded)
    backups = {e["seq"]: e["event"]["backup_digest"] for e in json.loads(recorded.stdout)}
    assert backups[doc["ledger_seq"]] == doc["digest"]
    again = cli("backup", "create", str(backup), server=server.url, token=token)
    assert again.returncode == 2 and "already exists" in one_line_error(again)
    analyst = add_token(server.workspace, "remote-analyst4", "analyst")
    refused = cli("backup", "create", str(tmp_path / "no.backup"), server=server.url, token=analyst)
    assert refused.returncode == 2
    one_line_error(refused)
    assert not (tmp_path / "no.backup").exists()


def test_share_agreement_created_exported_opened_and_revoked(live: tuple[Server, str], tmp_path: Path) -> None:
    server, token = live
    key = tmp_path / "recipient.key"
    ok(local(server, "share", "keygen", "--out", str(key)))
    made = cli("share", "create", "--recipient", "lab", "--recipient-key", f"{key}.pub", "--dataset", "adult",
               "--purpose", "research", "--fields", "age,education", "--max-uses", "2",
               "--recipient-jurisdiction", "EU", "--json", server=server.url, token=token)  # fmt: skip
    ok(made)
    agreement = json.loads(made.stdout)
    assert agreement["fields"] == ["age", "education"] and agreement["max_uses"] == 2
    listed = cli("share", "list", "--json", server=server.url, token=token)
    ok(listed)
    assert json.loads(listed.stdout) == json.loads(local(server, "share", "list", "--json").stdout)
    package = tmp_path / "share.pkg"
    sealed = cli("share", "export", agreement["id"], "--out", str(package), "--json", server=server.url, token=token)
    ok(sealed)
    result = json.loads(sealed.stdout)
    assert result["use"] == 1 and result["max_uses"] == 2 and stat.S_IMODE(package.stat().st_mode) == 0o600
    opened = local(server, "share", "open", str(package), "--key", str(key), "--out", str(tmp_path / "opened"),
                   "--json")  # fmt: skip
    ok(opened)
    assert json.loads(opened.stdout)["rows"] == result["rows"] > 0
    ok(cli("share", "revoke", agreement["id"], server=server.url, token=token))
    refused = cli("share", "export", agreement["id"], "--out", str(tmp_path / "again.pkg"),
                  server=server.url, token=token)  # fmt: skip
    assert refused.returncode == 2
    one_line_error(refused)
    assert not (tmp_path / "again.pkg").exists()
