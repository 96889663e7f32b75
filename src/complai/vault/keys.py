"""Key rotation: a new key-encryption key version, data keys re-wrapped in batches, old versions retired.

Each batch commits on its own, so a rotation killed part-way leaves every data key wrapped under
either the old or the new KEK (both still in the key file) and `rotate` resumes where it stopped
instead of starting another version.

Writers in other processes wrap new data keys under the version the database names current (the
`kek_current` meta row, read under a shared lock in their write transaction, see crypto/keyring.py).
Rotation switches that row under an exclusive lock, which waits for every writer that read the old
version to commit; so once the switch commits, no data key can appear under the old version again,
and the re-wrap that follows finds them all. A version is retired only under the same exclusive lock
and only when no data key uses it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, func, select

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
        with self.store.read() as conn:
            return self._pending(conn, self.keyring.current_kek(conn))

    @staticmethod
    def _pending(conn: Connection, current: int) -> int:
        c = subject_keys.c
        q = select(func.count()).select_from(subject_keys).where(c.kek_version != current)
        return int(conn.execute(q).scalar_one())

    def rotate(
        self, actor: str, batch_size: int = 2000, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, object]:
        provider = self.keyring.provider
        with self.store.write() as conn:
            current = self.keyring.kek_version(conn, exclusive=True)
            provider.refresh()
            older = self._older_in_use(conn, current)
            if older:  # a rotation stopped during its re-wrap: finish it
                resumed, old, new = True, min(older), current
            elif provider.current_version() > current:  # stopped after adding its version, before the switch
                resumed, old, new = True, current, provider.current_version()
            else:
                resumed, old, new = False, current, provider.add_version()
            if new != current:
                self.keyring.set_kek_version(conn, new)
            pending = self._pending(conn, new)
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
            current = self.keyring.kek_version(conn, exclusive=True)
            in_use = set(self._older_in_use(conn, current)) | {current}
            provider.refresh()
            for version in sorted(provider.versions()):
                # only versions older than the current one: a newer one is a rotation's, not yet switched to
                if version < current and version not in in_use:
                    provider.retire(version)
                    retired.append(version)
            self.ledger.emit(
                conn,
                KeysRotated,
                actor=actor,
                purpose="security",
                from_version=old,
                to_version=new,
                deks_rewrapped=done,
                resumed=resumed,
                retired=retired,
            )
        return {"from_version": old, "to_version": new, "deks_rewrapped": done, "resumed": resumed, "retired": retired}

    @staticmethod
    def _older_in_use(conn: Connection, current: int) -> list[int]:
        """KEK versions other than `current` that still wrap a data key, as the store says (never the
        key file: a version the file lost still counts here, and the re-wrap then fails loudly)."""
        c = subject_keys.c
        q = select(c.kek_version).where(c.kek_version != current).distinct()
        return sorted(int(v) for v in conn.execute(q).scalars())

    def status(self) -> dict[str, object]:
        with self.store.read() as conn:
            st = self.keyring.status(conn)
        st["rotation_pending"] = self.pending()
        return st
