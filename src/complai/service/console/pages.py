"""Console pages: the overview, the request work queue, DPIAs and incidents."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from complai.service.console.web import ConsoleCaller, render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: ConsoleCaller) -> HTMLResponse:
    return render(request, "console/overview.html", title="Overview")
