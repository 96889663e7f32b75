"""ASGI middleware of the service: security headers on every response, request size limits (a JSON
body or form is small; an upload to an ingest route may be large, and is streamed), a deadline on each
request (and on each part of its body), and the last word on an unexpected error (a bare 500; its type
logged, never its message or traceback)."""

from __future__ import annotations

import asyncio
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


REQUEST_TIMEOUT_S = 60.0  # a request's answer; anything longer is a job (202 Accepted)
UPLOAD_TIMEOUT_S = 3600.0  # an upload's body and answer: 1 GiB over a slow link
BODY_IDLE_S = 30.0  # the longest wait for the next part of a request body
DEADLINE_GRACE_S = 2.0  # for a handler refused its body at the deadline to answer that itself


class RequestDeadline:
    """Gives up waiting for a handler that has not begun its answer within `seconds` (`upload_seconds`
    on a path ending in one of `upload_paths`, where the body streams in) and answers 503 instead: a
    problem document, or a page under the console or the portal. The handler is not stopped (a route in
    the thread pool cannot be; its transaction commits or rolls back on its own), so the answer says the
    outcome is unknown and how to find it, and whatever the handler answers later is dropped. An answer
    that has begun (a streamed download) is not cut.

    A request body must keep coming: a wait of more than `body_idle_seconds` for its next part, or for
    any part past the deadline, is refused with 408 where the handler reads it (nothing was carried out
    on a body that never arrived), so a slow sender holds a worker no longer than that."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        seconds: float = REQUEST_TIMEOUT_S,
        upload_seconds: float = UPLOAD_TIMEOUT_S,
        body_idle_seconds: float = BODY_IDLE_S,
        upload_paths: tuple[str, ...] = (),
    ) -> None:
        self.app, self.seconds, self.upload_seconds = app, seconds, upload_seconds
        self.body_idle_seconds, self.upload_paths = body_idle_seconds, upload_paths

    def limit_for(self, path: str) -> float:
        return self.upload_seconds if any(path.endswith(p) for p in self.upload_paths) else self.seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # heavy: problems.py loads FastAPI's handlers, which the middleware otherwise does not need
        from complai.service.problems import deadline_passed

        loop = asyncio.get_running_loop()
        limit = self.limit_for(scope.get("path", ""))
        deadline = loop.time() + limit
        answered = asyncio.Event()  # the handler began its answer
        late = False  # the deadline's answer went out in its place
        body_done = reading = False

        async def timed_receive() -> Message:
            nonlocal body_done, reading
            if body_done:  # after the body only a disconnect can come, whenever it does
                return await receive()
            wait = max(0.0, min(self.body_idle_seconds, deadline - loop.time()))
            reading = True
            try:
                async with asyncio.timeout(wait):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, "the request body stopped arriving, or came too slowly; the request was not carried out"
                ) from None
            finally:
                reading = False
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            if late:
                return
            if message["type"] == "http.response.start":
                answered.set()
            await send(message)

        async def watch() -> None:
            nonlocal late
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await answered.wait()
                return
            except TimeoutError:
                pass
            if reading:  # held up by its body: the handler's own 408 is due now
                try:
                    async with asyncio.timeout(DEADLINE_GRACE_S):
                        await answered.wait()
                    return
                except TimeoutError:
                    pass
            if answered.is_set():  # it began in the same instant
                return
            late = True
            log.warning(
                "request past its deadline", extra={"complai": {"path": scope.get("path", ""), "limit_s": limit}}
            )
            await deadline_passed(scope, limit)(scope, receive, send)

        watcher = asyncio.ensure_future(watch())
        try:
            # the handler runs to its end here, answered or not: nothing is left running unowned
            await self.app(scope, timed_receive, guarded_send)
        finally:
            if not watcher.done():
                watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                pass
