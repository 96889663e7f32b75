"""ASGI middleware of the service: security headers on every response, request size limits (a JSON
body or form is small; an upload to an ingest route may be large, and is streamed), and the last word on
an unexpected error (a bare 500; its type logged, never its message or traceback)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("complai.service")

# the console's pages run only their own scripts, from this origin; API responses run nothing
CSP_PAGES = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CSP_API = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def security_headers(path: str, tls: bool) -> list[tuple[bytes, bytes]]:
    page = path.startswith(("/console", "/portal", "/static")) or path == "/"
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", (CSP_PAGES if page else CSP_API).encode()),
    ]
    if tls:
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return headers


class SecurityHeaders:
    """Adds the security headers to every HTTP response (an existing header of the same name is kept)."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app, self.tls = app, tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope.get("path", ""), self.tls)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuses a request body over its limit with 413 (before reading it when Content-Length says so,
    else as soon as the streamed body passes the limit). Paths ending in one of `upload_paths` get the upload limit."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int, upload_paths: tuple[str, ...]) -> None:
        self.app, self.max_body, self.max_upload, self.upload_paths = app, max_body, max_upload, upload_paths

    def limit_for(self, path: str) -> int:
        return self.max_upload if any(path.endswith(p) for p in self.upload_paths) else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await _send_problem(send, 400, "invalid input", "Content-Length is not a number")
                    return
                if declared > limit:
                    await _send_problem(send, 413, "request too large", f"the body is over the limit of {limit} bytes")
                    return
        seen = 0

        async def counted() -> Message:
            # raised where the app reads its body, so the app's own handler answers 413 (problem details)
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the body is over the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


async def _send_problem(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Unexpected:
    """Answers an exception that no handler took with a bare 500 problem and logs only its type and path.
    Starlette's own last handler answers too, but then hands the exception on to the server, which logs
    its traceback: the message, and SQL with its values, on stderr. Installed innermost of the
    middleware, so the 500 still gets the security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error(
                "unexpected error", extra={"complai": {"error": type(exc).__name__, "path": scope.get("path", "")}}
            )
            if not started:  # else the response is cut short: nothing more can be said
                await _send_problem(
                    send, 500, "internal error", "the server could not complete the request; nothing was changed"
                )
