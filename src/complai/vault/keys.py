"""Key rotation: a new key-encryption key version, data keys re-wrapped in batches, old versions retired.

Each batch commits on its own, so a rotation killed part-way leaves every data key wrapped under
either the old or the new KEK (both still in the key file) and `rotate` resumes where it stopped
instead of starting another version.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from complai.clock import Clock
from complai.crypto.keyring import Keyring
from complai.events import KeysRotated
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import subject_keys


class KeyService:
    def __init__(self, store: Store, ledger: Ledger, keyring: Keyring, clock: Clock) -> None:
        self.store, self.ledger, self.keyring, self.clock = store, ledger, keyring, clock

    def pending(self) -> int:
        """Data keys still wrapped under an older KEK version (a rotation in progress)."""
        current = self.keyring.provider.current_version()
        with self.store.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(subject_keys).where(subject_keys.c.kek_version != current)
                ).scalar_one()
            )

    def rotate(
        self, actor: str, batch_size: int = 2000, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, object]:
        provider = self.keyring.provider
        pending = self.pending()
        resumed = pending > 0
        old = provider.current_version()
        if resumed:
            old = min(v for v in provider.versions() if v != provider.current_version())
        else:
            provider.add_version()
            pending = self.pending()
        new = provider.current_version()
        done = 0
        last = None
        while True:
            with self.store.write() as conn:
                n, last = self.keyring.rewrap_batch(conn, batch_size, last)
            done += n
            if progress is not None:
                progress(done, pending)
            if n < batch_size:
                break
        retired = []
        with self.store.write() as conn:
            in_use = {int(v) for v in conn.execute(select(subject_keys.c.kek_version).distinct()).scalars()}
            for version in sorted(provider.versions()):
                if version != new and version not in in_use:
                    provider.retire(version)
                    retired.append(version)
            self.ledger.append(
                conn,
                KeysRotated(
                    time=self.clock.now(),
                    actor=actor,
                    purpose="security",
                    from_version=old,
                    to_version=new,
                    deks_rewrapped=done,
                    resumed=resumed,
                    retired=retired,
                ),
            )
        return {"from_version": old, "to_version": new, "deks_rewrapped": done, "resumed": resumed, "retired": retired}

    def status(self) -> dict[str, object]:
        with self.store.read() as conn:
            st = self.keyring.status(conn)
        st["rotation_pending"] = self.pending()
        return st
