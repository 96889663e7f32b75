"""A token's last use is noted once a minute at most: authenticating a request reads, and writes only
when the recorded time is a minute old (or missing, or in the future), so a busy service does not write
on every request. What authentication checks is unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from complai.access.identity import LAST_USED_RESOLUTION, _stale_use
from complai.app.workspace import Workspace
from complai.clock import ManualClock, parse_utc, utc_iso
from complai.errors import AuthenticationFailed
from complai.store.tables import meta, tokens


def last_used(ws: Workspace, token_id: str) -> str | None:
    with ws.store.read() as conn:
        value = conn.execute(select(meta.c.value).where(meta.c.key == f"token_last_used:{token_id}")).scalar()
    return None if value is None else str(value)


def test_uses_within_a_minute_write_once(ws: Workspace, clock: ManualClock) -> None:
    issued = ws.session("owner", "security").create_token("owner", "P1D")
    assert last_used(ws, issued.id) is None
    first = clock.now()
    ws.authenticate(issued.token)
    assert parse_utc(last_used(ws, issued.id) or "") == first
    for _ in range(3):
        clock.advance(timedelta(seconds=15))
        ws.authenticate(issued.token)
    assert parse_utc(last_used(ws, issued.id) or "") == first  # 45 s later: not rewritten
    clock.advance(timedelta(seconds=16))
    ws.authenticate(issued.token)
    assert parse_utc(last_used(ws, issued.id) or "") == clock.now()  # over a minute: moved on


def test_a_recorded_time_in_the_future_is_corrected(ws: Workspace, clock: ManualClock) -> None:
    issued = ws.session("owner", "security").create_token("owner", "P1D")
    ws.authenticate(issued.token)
    with ws.store.write() as conn:
        future = utc_iso(clock.now() + timedelta(days=3))
        conn.execute(update(meta).where(meta.c.key == f"token_last_used:{issued.id}").values(value=future))
    ws.authenticate(issued.token)
    assert parse_utc(last_used(ws, issued.id) or "") == clock.now()


def test_a_token_changed_at_rest_is_still_refused(ws: Workspace, clock: ManualClock) -> None:
    issued = ws.session("owner", "security").create_token("owner", "PT1H")
    ws.authenticate(issued.token)
    with ws.store.write() as conn:  # extended at rest, behind the ledger's back
        later = clock.now() + timedelta(days=365)
        conn.execute(update(tokens).where(tokens.c.id == issued.id).values(expires_at=later))
    with pytest.raises(AuthenticationFailed):
        ws.authenticate(issued.token)


@pytest.mark.parametrize(
    ("recorded", "age", "stale"),
    [
        (None, None, True),
        ("not a time", None, True),
        ("t", 0, False),
        ("t", 59, False),
        ("t", 60, True),
        ("t", -1, True),
    ],
)
def test_stale_use(recorded: str | None, age: int | None, stale: bool, clock: ManualClock) -> None:
    now = clock.now()
    if recorded == "t" and age is not None:
        recorded = utc_iso(now - timedelta(seconds=age))
    assert LAST_USED_RESOLUTION == timedelta(minutes=1)
    assert _stale_use(recorded, now) is stale
