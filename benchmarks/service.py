"""HTTP service benchmark: `complai serve` on PostgreSQL under a bounded locust run on loopback.

- load: 50 analysts (each its own principal and token) doing governed reads of 100 rows and DP counts,
  and 5 officers browsing the console's pages and reading the API; throughput, p50 and p99 per request
  type, at a think time of about a second per user ("paced") and with none ("saturated");
- the same 1,000-row governed read over HTTP (JSON) and in process (a session's read_page), one at a
  time on an idle server: the ratio;
- the budget under concurrency: 50 analysts race DP counts of epsilon 0.01 against a dataset whose
  budget is epsilon 1.0; no more than 100 may be answered, the rest refused (409), and the ledger's
  record of the spends must add up to no more than the budget;
- the ledger verifies after the run (the service's own verification job).

    python benchmarks/service.py [--analysts 50] [--officers 5] [--duration 45] [--workers 1] [--out FILE]

The locust users live in this file too: locust imports it with COMPLAI_BENCH_LOCUST naming the run's
tokens (gevent patches the process, which is why the measuring process never imports locust).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_ENV = "COMPLAI_BENCH_LOCUST"
SECRET = "correct horse battery staple 42"
DP_SQL = "SELECT COUNT(*) FROM adult WHERE age > {age}"

if os.environ.get(BENCH_ENV):  # imported by locust: the users only
    from locust import FastHttpUser, between, constant, task

    _cfg = json.loads(Path(os.environ[BENCH_ENV]).read_text())
    _analysts = itertools.count()
    _officers = itertools.count()
    _wait = constant(0) if _cfg["think"] == 0 else between(0.5 * _cfg["think"], 1.5 * _cfg["think"])

    class Analyst(FastHttpUser):
        fixed_count = _cfg["analysts"]
        wait_time = _wait

        def on_start(self) -> None:
            token = _cfg["analyst_tokens"][next(_analysts) % len(_cfg["analyst_tokens"])]
            self.auth = {"Authorization": f"Bearer {token}"}
            self.rng = random.Random(id(self))

        @task
        def read_100(self) -> None:
            offset = self.rng.randrange(0, _cfg["rows"] - 100)
            self.client.get(
                f"/api/v1/datasets/adult/records?purpose=analytics&limit=100&offset={offset}",
                headers=self.auth,
                name="governed read, 100 rows",
            )

        @task
        def dp_count(self) -> None:
            body = {"sql": DP_SQL.format(age=self.rng.randrange(20, 70)), "epsilon": 0.001}
            self.client.post("/api/v1/dp/query?purpose=analytics", json=body, headers=self.auth, name="DP count")

    class Officer(FastHttpUser):
        fixed_count = _cfg["officers"]
        wait_time = _wait

        def on_start(self) -> None:
            token = _cfg["officer_tokens"][next(_officers) % len(_cfg["officer_tokens"])]
            self.auth = {"Authorization": f"Bearer {token}"}
            self.cookie = {"Cookie": f"complai_console={token}"}

        @task
        def console_overview(self) -> None:
            self.client.get("/console/", headers=self.cookie, name="console page")

        @task
        def console_ledger(self) -> None:
            self.client.get("/console/ledger", headers=self.cookie, name="console page")

        @task
        def console_datasets(self) -> None:
            self.client.get("/console/datasets", headers=self.cookie, name="console page")

        @task
        def api_ledger(self) -> None:
            self.client.get("/api/v1/ledger", headers=self.auth, name="API read (ledger, datasets)")

        @task
        def api_datasets(self) -> None:
            self.client.get("/api/v1/datasets", headers=self.auth, name="API read (ledger, datasets)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prepare(path: Path, database_url: str, rows: int, analysts: int, officers: int) -> dict[str, Any]:
    """The workspace: Adult rows, a budget-limited copy, analysts allowed to read and query, officers
    (people with passwords, role auditor), and the owner's token."""
    from complai.app.workspace import Workspace
    from complai.datasets import adult_schema_path, load_adult
    from complai.datasets.consents import adult_consents
    from complai.vault.schema import load_schema

    ws = Workspace.init(path, database_url=database_url)
    try:
        admin = ws.session("owner", "administration")
        spec = load_schema(adult_schema_path(), ws.taxonomy)
        admin.create_dataset(spec)
        admin.create_dataset(spec.model_copy(update={"name": "adult_budget"}))
        df = load_adult("train").head(rows).drop(columns=["split"], errors="ignore")
        admin.ingest("adult", df, adult_consents(df["subject_id"], now=ws.clock.now()))
        small = df.head(500)
        admin.ingest("adult_budget", small, adult_consents(small["subject_id"], now=ws.clock.now()))
        admin.set_budget("adult", 1e6, 1e-3)
        admin.set_budget("adult_budget", 1.0, 1e-6)
        sec = ws.session("owner", "security")
        for action in ("read", "query_dp"):
            for dataset in ("adult", "adult_budget"):
                sec.add_rule("role:analyst", dataset, action, "analytics")
        analyst_tokens = []
        for i in range(analysts):
            name = f"analyst{i:02d}"
            sec.add_principal(name, "service")
            sec.grant_role(name, "analyst")
            analyst_tokens.append(sec.create_token(name, "P1D").token)
        officer_tokens = []
        for i in range(officers):
            name = f"officer{i}"
            sec.add_principal(name, "human", password=SECRET)
            sec.grant_role(name, "auditor")
            officer_tokens.append(sec.create_token(name, "P1D").token)
        owner = sec.create_token("owner", "P1D").token
    finally:
        ws.close()
    return {"analyst_tokens": analyst_tokens, "officer_tokens": officer_tokens, "owner": owner, "rows": rows}


def alternating(path: Path, url: str, token: str, n: int, rows: int) -> dict[str, float]:
    """Medians of the 1,000-row governed read over HTTP (JSON, and the same page as CSV and as Parquet)
    and in process (a session opened by the same token, as the service does per request), and of an
    authenticated no-op (GET /api/v1/me) against the token check alone, alternating one of each so that
    the machine's load hits both."""
    import httpx

    from complai.app.workspace import Workspace

    ws = Workspace.open(path)
    ws.keep_opened_records(200_000)  # as the service keeps them: both sides serve the read from opened records
    times: dict[str, list[float]] = {
        "http": [], "csv": [], "parquet": [], "local": [], "me_http": [], "auth_local": [],
    }  # fmt: skip
    params: dict[str, Any] = {"purpose": "analytics", "limit": 1000}
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            c.get("/api/v1/datasets/adult/records", params=params).raise_for_status()  # warm both
            ws.session(token, "analytics").read_page("adult", None, offset=0, limit=1000)
            for i in range(n):
                offset = (i % max(1, rows // 1000)) * 1000  # whole pages only
                t0 = time.perf_counter()
                r = c.get("/api/v1/datasets/adult/records", params={**params, "offset": offset})
                times["http"].append(time.perf_counter() - t0)
                r.raise_for_status()
                assert len(r.json()["rows"]) == 1000
                for fmt in ("csv", "parquet"):  # the same page as CSV and as Parquet
                    t0 = time.perf_counter()
                    c.get("/api/v1/datasets/adult/records", params={**params, "offset": offset, "format": fmt})
                    times[fmt].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ws.session(token, "analytics").read_page("adult", None, offset=offset, limit=1000)
                times["local"].append(time.perf_counter() - t0)
                for _ in range(3):
                    t0 = time.perf_counter()
                    c.get("/api/v1/me").raise_for_status()
                    times["me_http"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    ws.authenticate(token)
                    times["auth_local"].append(time.perf_counter() - t0)
    finally:
        ws.close()
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def start_server(path: Path, workers: int, threads: int | None = None) -> tuple[subprocess.Popen[bytes], str, Path]:
    import httpx

    port = _free_port()
    log = path.parent / "serve.log"
    exe = str(Path(sys.executable).with_name("complai"))
    cmd = [exe, "--workspace", str(path), "serve", "--port", str(port), "--workers", str(workers)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the server did not start")


def run_locust(url: str, cfg: dict[str, Any], folder: Path, duration: int, think: float) -> dict[str, Any]:
    """One headless locust run; its per-request-type statistics from locust's CSV."""
    conf = folder / f"locust-{think}.json"
    conf.write_text(json.dumps({**cfg, "think": think}))
    users = cfg["analysts"] + cfg["officers"]
    prefix = folder / f"locust-{think}"
    cmd = [
        str(Path(sys.executable).with_name("locust")),
        "-f",
        __file__,
        "--headless",
        "--users",
        str(users),
        # users join over about five seconds and the statistics start once all have joined: what is
        # measured is the steady state of 50 analysts, not 55 first requests arriving at one instant
        "--spawn-rate",
        str(max(1, users // 5)),
        "--reset-stats",
        "--run-time",
        f"{duration + 5}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "ERROR",
        "--stop-timeout",
        "10",
    ]
    env = {**os.environ, BENCH_ENV: str(conf)}
    subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=duration + 120)
    out: dict[str, Any] = {}
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                "p50_ms": float(row["50%"]),
                "p99_ms": float(row["99%"]),
                "max_ms": float(row["Max Response Time"]),
            }
    failures_csv = Path(f"{prefix}_failures.csv")
    if failures_csv.exists():
        with failures_csv.open(newline="") as f:
            out["failure kinds"] = [{k: v for k, v in r.items()} for r in csv.DictReader(f)][:10]
    return out


def budget_race(url: str, tokens: list[str], attempts: int, owner: str) -> dict[str, Any]:
    """Analysts race epsilon-0.01 counts against a budget of 1.0: answered, refused, and the ledger's sum."""
    import httpx

    def one(i: int) -> tuple[int, str]:
        token = tokens[i % len(tokens)]
        body = {"sql": "SELECT COUNT(*) FROM adult_budget", "epsilon": 0.01}
        r = httpx.post(
            url + "/api/v1/dp/query",
            params={"purpose": "analytics"},
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        return r.status_code, r.text if r.status_code not in (200, 409) else ""

    with ThreadPoolExecutor(len(tokens)) as pool:
        answers = list(pool.map(one, range(attempts)))
    codes = [c for c, _ in answers]
    unexpected = sorted({text[:300] for c, text in answers if text})
    spent = 0.0
    answered_in_ledger = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {owner}"}, timeout=120) as c:
        start: int | None = 0
        while start is not None:
            page = c.get("/api/v1/ledger/entries", params={"start": start, "limit": 500, "type": "dp.query"}).json()
            for e in page["entries"]:
                if e["event"].get("dataset") == "adult_budget":
                    spent += float(e["event"]["epsilon"])
                    answered_in_ledger += 1
            start = page["next"]
        state = c.get("/api/v1/datasets/adult_budget/budget", params={"purpose": "analytics"}).json()
    answered = codes.count(200)
    return {
        "budget_state": state,
        "budget_epsilon": 1.0,
        "query_epsilon": 0.01,
        "attempts": attempts,
        "answered": answered,
        "refused_409": codes.count(409),
        "other": sorted({c for c in codes if c not in (200, 409)}),
        "other_problems": unexpected,
        "ledger_answers": answered_in_ledger,
        "ledger_epsilon_spent": round(spent, 9),
        # what the ledger records as spent, and what the budget says, stay within the budget
        "never_overspent": spent <= 1.0 + 1e-9 and float(state["epsilon_spent_at_delta"]) <= 1.0 + 1e-9,
        "answered_but_not_told": answered_in_ledger - answered,
        "refused_once_exhausted": codes.count(409) > 0 and answered <= 100,
    }


def verify_ledger(url: str, owner: str) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {owner}"}, timeout=120) as c:
        r = c.post("/api/v1/ledger/verify", json={"witnesses": 0})
        r.raise_for_status()
        job = r.json()
        deadline = time.monotonic() + 600
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = c.get(f"/api/v1/jobs/{job['id']}").json()
    result = job.get("result") or {}
    return {"state": job["state"], "ok": bool(result.get("ok")), "size": result.get("size")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--analysts", type=int, default=50)
    ap.add_argument("--officers", type=int, default=5)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=45, help="Seconds of each locust run.")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="Request threads per worker (the server's default).")
    ap.add_argument("--reads", type=int, default=20, help="1,000-row reads timed each way.")
    ap.add_argument("--database-url", default=None, help="PostgreSQL server to create the database on.")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/service.json"))
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(Path(__file__).parent))
    from common import DEFAULT_PG, pg_database, write_results

    console = Console()
    folder = Path(tempfile.mkdtemp(prefix="complai-bench-service-"))
    result: dict[str, Any] = {
        "analysts": args.analysts,
        "officers": args.officers,
        "rows": args.rows,
        "workers": args.workers,
        "threads": args.threads,
        "duration_s": args.duration,
        "store": "postgresql",
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
    }
    try:
        with pg_database(args.database_url or DEFAULT_PG) as db:
            path = folder / "ws"
            t0 = time.perf_counter()
            cfg = prepare(path, db, args.rows, args.analysts, args.officers)
            cfg.update(analysts=args.analysts, officers=args.officers)
            result["setup_s"] = round(time.perf_counter() - t0, 1)
            proc, url, log = start_server(path, args.workers, args.threads)
            try:
                m = alternating(path, url, cfg["analyst_tokens"][0], args.reads, args.rows)
                result["read_1000"] = {
                    "http_ms": round(m["http"], 2),
                    "in_process_ms": round(m["local"], 2),
                    "ratio": round(m["http"] / m["local"], 2),
                    "http_csv_ms": round(m["csv"], 2),
                    "ratio_csv": round(m["csv"] / m["local"], 2),
                    "http_parquet_ms": round(m["parquet"], 2),
                    "ratio_parquet": round(m["parquet"] / m["local"], 2),
                }
                result["authenticated_no_op"] = {
                    "http_get_me_ms": round(m["me_http"], 2),
                    "in_process_authenticate_ms": round(m["auth_local"], 2),
                }
                result["paced"] = run_locust(url, cfg, folder, args.duration, think=1.0)
                result["saturated"] = run_locust(url, cfg, folder, args.duration, think=0)
                result["budget"] = budget_race(url, cfg["analyst_tokens"], 300, cfg["owner"])
                result["ledger_verify"] = verify_ledger(url, cfg["owner"])
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
            if "Traceback" in log.read_text(errors="replace"):
                result["server_log_tail"] = log.read_text(errors="replace")[-3000:]
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    t = Table(title=f"HTTP service: {args.analysts} analysts + {args.officers} officers, PostgreSQL, "
              f"{args.workers} worker(s), {os.cpu_count()} cores")  # fmt: skip
    for col in ("run", "request", "requests", "failures", "req/s", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right" if col not in ("run", "request") else "left")
    for run in ("paced", "saturated"):
        for name, s in result[run].items():
            if name == "failure kinds":
                continue
            t.add_row(run, name, str(s["requests"]), str(s["failures"]), f"{s['rps']:.1f}",
                      f"{s['p50_ms']:.0f}", f"{s['p99_ms']:.0f}")  # fmt: skip
    console.print(t)
    r, a = result["read_1000"], result["authenticated_no_op"]
    console.print(
        f"1,000-row governed read (medians, alternating): HTTP {r['http_ms']:.1f} ms, in process "
        f"{r['in_process_ms']:.1f} ms: {r['ratio']:.2f}x (CSV {r['http_csv_ms']:.1f} ms, "
        f"{r['ratio_csv']:.2f}x; Parquet {r['http_parquet_ms']:.1f} ms, {r['ratio_parquet']:.2f}x); "
        f"GET /api/v1/me {a['http_get_me_ms']:.1f} ms, "
        f"token check in process {a['in_process_authenticate_ms']:.1f} ms"
    )
    b = result["budget"]
    console.print(
        f"budget race: {b['answered']} answered, {b['refused_409']} refused, ledger spent epsilon "
        f"{b['ledger_epsilon_spent']:g} of 1.0 (never overspent: {b['never_overspent']}; refused once "
        f"exhausted: {b['refused_once_exhausted']})"
    )
    v = result["ledger_verify"]
    console.print(f"ledger after the run: {v['state']}, intact: {v['ok']}, {v['size']} entries")
    result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    console.print(f"load average (1, 5, 15 min): {result['load_average_at_start']} at start, "
                  f"{result['load_average_at_end']} at the end")  # fmt: skip
    write_results(args.out, result)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
