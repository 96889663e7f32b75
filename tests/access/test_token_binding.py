"""A token row changed at rest does not authenticate: revived after revocation or after its principal
was disabled, its expiry moved, its secret hash replaced, or planted without a creation entry."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import insert, update

from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed
from complai.store.tables import principals, tokens


def _refused(ws: Workspace, token: str) -> None:
    with pytest.raises(AuthenticationFailed):
        ws.identity.authenticate(token)


def test_tokens_changed_at_rest_do_not_authenticate(ws: Workspace) -> None:
    ws.identity.add("owner", "ana")
    ws.identity.add("owner", "eve")
    tid, token = ws.identity.create_token("owner", "ana", expires="P1D")
    assert ws.identity.authenticate(token).name == "ana"
    ws.identity.revoke_token("owner", tid)
    with ws.store.write() as conn:
        conn.execute(update(tokens).where(tokens.c.id == tid).values(revoked_at=None))
    _refused(ws, token)

    tid2, token2 = ws.identity.create_token("owner", "ana", expires="P1D")
    ws.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    with ws.store.write() as conn:
        conn.execute(update(tokens).where(tokens.c.id == tid2).values(expires_at=ws.clock.now() + timedelta(days=9)))
    _refused(ws, token2)

    tid3, token3 = ws.identity.create_token("owner", "eve", expires="P1D")
    ws.identity.disable("owner", "eve")
    with ws.store.write() as conn:
        conn.execute(update(principals).where(principals.c.name == "eve").values(disabled_at=None))
        conn.execute(update(tokens).where(tokens.c.id == tid3).values(revoked_at=None))
    _refused(ws, token3)

    tid4, _ = ws.identity.create_token("owner", "ana", expires="P1D")
    secret = "s" * 43
    with ws.store.write() as conn:  # a secret of the attacker's choosing
        conn.execute(
            update(tokens).where(tokens.c.id == tid4).values(secret_hash=hashlib.sha256(secret.encode()).digest())
        )
        conn.execute(
            insert(tokens).values(
                id="ab" * 8,
                principal="ana",
                secret_hash=hashlib.sha256(secret.encode()).digest(),
                created_at=ws.clock.now(),
                created_by="owner",
            )
        )
    _refused(ws, f"cpl_{tid4}_{secret}")
    _refused(ws, f"cpl_{'ab' * 8}_{secret}")
