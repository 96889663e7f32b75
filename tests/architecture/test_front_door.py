"""The interfaces (cli/, service/, the quickstart) reach services only through the session: none of them names a
service of the workspace (`ws.vault...`, `ws.ledger.head()`, `x.identity.add(...)`) or imports a
service class. A tripwire on the source, beside the typed Session the interfaces are written against."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from complai.app.services import Services

SRC = Path(__file__).resolve().parents[2] / "src" / "complai"
INTERFACES = sorted([*(SRC / "cli").glob("*.py"), *(SRC / "service").rglob("*.py"), SRC / "quickstart.py"])
SERVICES = {f.name for f in dataclasses.fields(Services)} | {"services", "_svc"}
# what an interface may ask of the workspace object itself: a session, its location, closing it
WORKSPACE_DOOR = {
    "session",
    "authenticate",
    "login",
    "close",
    "path",
    "init",
    "open",
    "restore_backup",
    "transparency_log",  # the ledger's checkpoint and hash tiles: public, no personal data (app/tlog.py)
    # the opened records a long-running process keeps (vault/readcache.py): how many, when to look
    "keep_opened_records",
    "look_for_changes",
    "forget_opened_records",
    "warm_up",  # loads the DP engine's modules before a service's first request
    # a Spark session the caller owns (a notebook's, a cluster job's) for reading external datasets
    # (spark.py); the workspace never stops it
    "use_spark",
}
# modules whose classes are services (an interface importing them could build or reach one)
SERVICE_MODULES = (
    "complai.vault.service",
    "complai.vault.catalog",
    "complai.vault.keys",
    "complai.access.identity",
    "complai.access.policy",
    "complai.access.agreements",
    "complai.dp.budget",
    "complai.dp.models",
    "complai.ledger.log",
    "complai.compliance.requests",
    "complai.compliance.incidents",
    "complai.store",
    "complai.app.services",
)


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            inner = node.value
            on_workspace = isinstance(inner, ast.Name) and inner.id in {"ws", "workspace"}
            if on_workspace and node.attr not in WORKSPACE_DOOR:  # ws.vault, ws.ledger.head(), ws.status()
                out.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            elif (  # any other object's service, used: session._svc.ledger.head(), x.identity.add()
                isinstance(inner, ast.Attribute)
                and inner.attr in SERVICES
                and not (isinstance(inner.value, ast.Name) and inner.value.id in {"ws", "workspace"})
            ):
                out.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(SERVICE_MODULES):
            for alias in node.names:
                # a service class is a way in; constants (OWNER) and plain functions (which would need a
                # service's store to act) are not
                if alias.name[:1].isupper() and not alias.name.isupper():
                    out.append(f"{path.name}:{node.lineno}: from {node.module} import {alias.name}")
    return sorted(out, key=lambda v: int(v.split(":")[1]))


@pytest.mark.parametrize("path", INTERFACES, ids=lambda p: p.name)
def test_interface_reaches_services_only_through_the_session(path):
    assert _violations(path) == []


def test_the_tripwire_sees_a_detour(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(ws, s):\n    ws.identity.add('x')\n    s.ledger.head()\n    ws.vault\n    s.read('d')\n")
    assert [v.split(": ", 1)[1] for v in _violations(probe)] == ["ws.identity", "s.ledger.head", "ws.vault"]
