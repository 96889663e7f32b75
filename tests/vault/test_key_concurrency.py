"""Key rotation while other processes write: no data key is ever wrapped under a retired KEK version,
every subject reads back, and ENC-1 proves decryptability rather than the presence of a key row."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import update

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.compliance import engine
from complai.crypto.keyring import FileKeyProvider
from complai.errors import IntegrityError
from complai.store.tables import subject_keys
from tests.vault.conftest import PEOPLE

PER_BATCH = 25


def frame(prefix: str, n: int) -> pd.DataFrame:
    rows = [
        (f"{prefix}-{i}", f"Name {prefix} {i}", f"{prefix.lower()}{i}@example.org", 1000 + i, "retail")
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["customer_id", "full_name", "email", "income", "segment"])


def read_ids(ws: Workspace) -> list[str]:
    return sorted(ws.session("owner", "customer_support").read("customers")["customer_id"])


def enc1(ws: Workspace) -> engine.Finding:
    return engine.encryption(engine.AuditContext(compliance_services(ws.services), ws.clock.now()))


def test_a_writer_opened_before_a_rotation_wraps_under_the_new_version(customers: Workspace) -> None:
    """The writer read the key file (version 1 only) before the rotation retired version 1."""
    writer = Workspace.open(customers.path, clock=customers.clock)
    try:
        first = customers.keys.rotate("owner")
        assert first["to_version"] == 2 and first["retired"] == [1]
        writer.vault.ingest("customers", frame("W", 20), actor="owner")
        assert customers.keys.status()["deks_by_kek_version"] == {"2": 24}
        assert read_ids(customers) == sorted([p[0] for p in PEOPLE] + list(frame("W", 20)["customer_id"]))
        assert enc1(customers).status == engine.PASS
        # the writer, still on its old copy of the key file, keeps writing and reading
        writer.vault.ingest("customers", frame("X", 5), actor="owner")
        assert len(read_ids(writer)) == 29
        second = customers.keys.rotate("owner")
        assert (second["from_version"], second["to_version"], second["retired"]) == (2, 3, [2])
        assert customers.keys.status()["deks_by_kek_version"] == {"3": 29}
    finally:
        writer.close()


def test_enc1_fails_when_a_wrapping_version_is_gone_or_a_key_does_not_unwrap(customers: Workspace) -> None:
    assert enc1(customers).status == engine.PASS
    with customers.store.write() as conn:
        conn.execute(update(subject_keys).where(subject_keys.c.subject_id == 1).values(kek_version=7))
    found = enc1(customers)
    assert found.status == engine.FAIL and found.evidence["deks_under_missing_kek"] == 1
    assert any("version(s) [7]" in i["problem"] for i in found.items)
    with customers.store.write() as conn:
        conn.execute(update(subject_keys).values(kek_version=1, wrapped=b"\x01" * 60))
    found = enc1(customers)
    assert found.status == engine.FAIL and found.evidence["deks_failed_to_unwrap"] == 4
    assert any("do not unwrap" in i["problem"] for i in found.items)


def test_rotation_resumes_from_the_store_when_older_versions_are_gone_from_the_key_file(
    customers: Workspace,
) -> None:
    """A resumed rotation takes its `from` version from the data keys, not from the key file: the key
    file no longer holding it is an error that names the version, not `min() arg is an empty sequence`."""
    customers.keys.rotate("owner")
    with customers.store.write() as conn:  # keys left under a version the key file no longer holds
        conn.execute(update(subject_keys).where(subject_keys.c.subject_id == 1).values(kek_version=1))
    with (
        Workspace.open(customers.path, clock=customers.clock) as later,
        pytest.raises(IntegrityError, match="version 1 is not available"),
    ):
        later.keys.rotate("owner")


def _ingest(path: str, prefix: str, batches: int, barrier: mp.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    with Workspace.open(Path(path), clock=ManualClock()) as ws:
        barrier.wait()
        for b in range(batches):
            ws.vault.ingest("customers", frame(f"{prefix}{b}", PER_BATCH), actor="owner")


def _rotate(path: str, rotations: int, barrier: mp.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    with Workspace.open(Path(path), clock=ManualClock()) as ws:
        barrier.wait()
        for _ in range(rotations):
            ws.keys.rotate("owner", batch_size=7)


def test_ingest_rotate_ingest_in_separate_processes(customers: Workspace) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_ingest, args=(str(customers.path), "A", 6, barrier)),
        ctx.Process(target=_rotate, args=(str(customers.path), 4, barrier)),
        ctx.Process(target=_ingest, args=(str(customers.path), "B", 6, barrier)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    expected = [p[0] for p in PEOPLE] + [f"{w}{b}-{i}" for w in "AB" for b in range(6) for i in range(PER_BATCH)]
    assert read_ids(customers) == sorted(expected)  # every subject reads back
    status = customers.keys.status()
    assert status["kek_current"] == 5 and status["rotation_pending"] == 0
    assert enc1(customers).status == engine.PASS
    after = customers.keys.rotate("owner")
    assert after["from_version"] == 5 and after["to_version"] == 6 and not after["resumed"]
    assert read_ids(customers) == sorted(expected)


def test_key_file_copies_reload_and_never_write_back_a_stale_state(tmp_path: Path) -> None:
    clock = ManualClock()
    a = FileKeyProvider.create(tmp_path, clock)
    b = FileKeyProvider(tmp_path, clock)  # another process's copy of the file
    _, under1 = b.wrap(b"k" * 32, b"ad")
    assert a.add_version() == 2
    version, under2 = b.wrap(b"k" * 32, b"ad", 2)  # b does not hold 2 yet: it reloads
    assert version == 2 and a.unwrap(2, under2, b"ad") == b"k" * 32
    a.retire(1)
    b.refresh()
    with pytest.raises(IntegrityError, match="version 1 is not available"):
        b.wrap(b"k" * 32, b"ad", 1)  # never wraps under a retired version
    assert b.unwrap(1, under1, b"ad") == b"k" * 32  # a version it held still opens a snapshot's keys
    with pytest.raises(IntegrityError, match="version 1 is not available"):
        FileKeyProvider(tmp_path, clock).unwrap(1, under1, b"ad")
    stale = FileKeyProvider(tmp_path, clock)
    assert a.add_version() == 3
    assert stale.add_version() == 4  # re-reads the file first: version 3 is kept
    assert sorted(FileKeyProvider(tmp_path, clock).versions()) == [2, 3, 4]
