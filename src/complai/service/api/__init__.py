"""/api/v1: every session operation over HTTP, one module per area (each an APIRouter)."""

from __future__ import annotations

from fastapi import APIRouter

from complai.service.api import access, auth, compliance, data, external, ledger, privacy, rights, system

router = APIRouter()
for module in (system, auth, data, external, privacy, access, rights, compliance, ledger):
    router.include_router(module.router)
