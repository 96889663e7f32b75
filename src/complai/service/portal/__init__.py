"""/portal: the data-subject portal, public, where a person exercises their rights (its own templates,
stylesheet and CSRF: nothing of the console's). `web.py` is its frame, `pages.py` its pages; each
acts through the session of the portal's service principal (app/ops/portal.py)."""

from __future__ import annotations

from fastapi import APIRouter

from complai.service.portal import pages

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
