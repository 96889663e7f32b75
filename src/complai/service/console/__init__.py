"""/console: the web console (server-rendered pages, progressive enhancement, no build chain).

`auth.py` logs people in and out; the pages live by area: `pages.py` (overview, requests, DPIAs,
incidents), `registry.py` (datasets, principals and policies, budgets, models, agreements, audits),
`ledger.py` (the ledger explorer, which verifies proofs in the browser)."""

from __future__ import annotations

from fastapi import APIRouter

from complai.service.console import auth, ledger, pages, registry

router = APIRouter(include_in_schema=False)
for module in (auth, pages, registry, ledger):
    router.include_router(module.router)
