"""/tlog: the ledger as a C2SP tlog-tiles log (checkpoint, tiles, entry bundles)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["tlog"])
