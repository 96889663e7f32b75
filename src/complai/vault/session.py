"""Purpose-bound sessions: the only way to reach personal data.

`ws.session(principal, purpose)` binds an actor and a declared purpose; every read through it is
checked against the dataset's allowed purposes and each subject's lawful basis, and recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from complai.vault.service import Vault


class Session:
    def __init__(self, vault: Vault, principal: str, purpose: str) -> None:
        self._vault = vault
        self.principal = principal
        self.purpose = purpose
        self.last_seq: int | None = None

    def read(self, dataset: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The dataset's rows this purpose may see, decrypted; the read is recorded in the ledger."""
        frame, seq = self._vault.read(dataset, self.purpose, self.principal, columns)
        self.last_seq = seq
        return frame

    def __repr__(self) -> str:
        return f"Session(principal={self.principal!r}, purpose={self.purpose!r})"
