"""/console: the web console (server-rendered pages, progressive enhancement, no build chain)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
