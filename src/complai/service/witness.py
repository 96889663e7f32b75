"""A witness as an HTTP service: C2SP tlog-witness `POST /add-checkpoint` (c2sp.org/tlog-witness).

The witness is the one `complai ledger witness init` makes (ledger/witness.py): its key and its state
(the size and root of the last checkpoint it cosigned, per log origin) in one folder, the state file
0600 and replaced atomically. It knows a fixed set of logs (origin -> Ed25519 note key). For each
request it checks, in this order: the body's form (400), the origin (404), the log's signature (403),
old size <= checkpoint size (400), old size = the size it cosigned last (409, with that size as
text/x.tlog.size), the same root when the sizes are equal (409), the RFC 9162 consistency proof (422);
then it records the new checkpoint and answers its cosignature (cosignature/v1, C2SP
tlog-cosignature, Ed25519) as a note signature line. Check and update run under one lock (a thread
lock and an advisory lock on the folder), so two requests can never roll its state back.

It needs no workspace and holds no personal data: what it signs is hashes. Its answers carry the
service's security headers (middleware.py), an unexpected error included.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from complai import __version__
from complai.crypto.signing import ALG_ED25519, VerifierKey
from complai.errors import IntegrityError, InvalidInput
from complai.ledger import merkle
from complai.ledger.checkpoint import parse_note, verify_note
from complai.ledger.witness import KEY_FILE, Witness
from complai.service.middleware import SecurityHeaders, Unexpected

SIZE_TYPE = "text/x.tlog.size"
MAX_BODY = 64 * 1024
MAX_PROOF = 63
LOCK_FILE = "witness.lock"


class Refused(Exception):
    """An add-checkpoint request the witness answers with a status and a one-line reason."""

    def __init__(self, status: int, reason: str, media_type: str = "text/plain") -> None:
        super().__init__(reason)
        self.status, self.reason, self.media_type = status, reason, media_type


def witness_dir(key: Path) -> Path:
    """The witness's folder from its key file (`<folder>/witness.key`) or the folder itself."""
    key = Path(key)
    if key.is_dir():
        return key
    if key.name != KEY_FILE:
        raise InvalidInput(f"a witness's key is the {KEY_FILE} file `complai ledger witness init` writes")
    return key.parent


def parse_logs(specs: list[str]) -> dict[str, VerifierKey]:
    """ORIGIN=VKEY pairs: the logs this witness cosigns, each with its Ed25519 note verifier key."""
    logs: dict[str, VerifierKey] = {}
    for spec in specs:
        origin, sep, vkey = spec.partition("=")
        if not sep or not origin or any(c.isspace() for c in origin):
            raise InvalidInput("--log takes ORIGIN=VKEY (the log's checkpoint origin and its verifier key)")
        key = VerifierKey.parse(vkey)
        if key.alg != ALG_ED25519:
            raise InvalidInput(f"--log {origin}: the verifier key is not an Ed25519 note key")
        if origin in logs:
            raise InvalidInput(f"--log {origin} is given twice")
        logs[origin] = key
    if not logs:
        raise InvalidInput("give at least one --log ORIGIN=VKEY")
    return logs


def parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    """(old size, consistency proof, checkpoint note) of an add-checkpoint body; Refused(400) if malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise Refused(400, "the request has no empty line before the checkpoint")
    lines = head.split("\n")
    old_line, proof_lines = lines[0], lines[1:]
    old = old_line[4:] if old_line.startswith("old ") else ""
    if not old.isascii() or not old.isdigit() or (old != "0" and old.startswith("0")) or len(old) > 20:
        raise Refused(400, "the first line must be `old <size>`")
    if len(proof_lines) > MAX_PROOF:
        raise Refused(400, f"a consistency proof has at most {MAX_PROOF} lines")
    proof = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except (ValueError, binascii.Error):
            raise Refused(400, "a consistency proof line is not base64") from None
        if len(h) != merkle.HASH_SIZE:
            raise Refused(400, "a consistency proof line is not a 32-byte hash")
        proof.append(h)
    return int(old), proof, note


class WitnessService:
    """The witness's state, one request at a time."""

    def __init__(self, directory: Path, logs: dict[str, VerifierKey]) -> None:
        self.dir = Path(directory)
        self.logs = logs
        self._lock = threading.Lock()
        self.name = Witness(self.dir).name  # fails early on a folder that holds no witness

    @contextmanager
    def _exclusive(self) -> Iterator[Witness]:
        """The witness's state, read fresh, while no other thread or process may change it."""
        with self._lock:
            fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield Witness(self.dir)
            finally:
                os.close(fd)  # releases the lock

    def add_checkpoint(self, body: bytes, now: int | None = None) -> str:
        """Check a request as c2sp.org/tlog-witness says and return the cosignature line; Refused otherwise."""
        old, proof, note_text = parse_request(body)
        try:
            note = parse_note(note_text)
        except IntegrityError as exc:
            raise Refused(400, f"not a checkpoint: {exc.message}") from None
        cp = note.checkpoint
        key = self.logs.get(cp.origin)
        if key is None:
            raise Refused(404, "unknown log")
        try:
            verify_note(note_text, key)
        except IntegrityError:
            raise Refused(403, "no valid signature by the log's key") from None
        if old > cp.size:
            raise Refused(400, "the old size is larger than the checkpoint's")
        with self._exclusive() as witness:
            last = witness.last_cosigned(cp.origin)
            size, root = last if last is not None else (0, b"")
            if old != size:
                raise Refused(409, f"{size}\n", SIZE_TYPE)
            if old == 0 and proof:
                raise Refused(422, "the proof must be empty from size 0")
            if old > 0:
                if old == cp.size and root != cp.root:
                    raise Refused(409, "same size, different root: the log forked")
                try:
                    merkle.verify_consistency(old, cp.size, root, cp.root, proof)
                except merkle.ProofError:
                    raise Refused(422, "the consistency proof does not verify") from None
            when = int(time.time()) if now is None else now
            try:
                sig = witness.cosign(note_text, key, proof, when)
            except IntegrityError:  # it checked the same again, against the same state
                raise Refused(422, "the checkpoint is not consistent with the last one cosigned") from None
        return sig.line()


def create_witness_app(directory: Path, logs: dict[str, VerifierKey]) -> FastAPI:
    """The witness's own app: `POST /add-checkpoint`, and `GET /` naming the witness and its logs."""
    svc = WitnessService(directory, logs)
    app = FastAPI(title="complai witness", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.witness = svc
    # as the service's: Unexpected innermost, so a bare 500 still gets the headers
    app.add_middleware(Unexpected)
    app.add_middleware(SecurityHeaders, tls=False)  # `complai witness serve` serves plain HTTP

    @app.exception_handler(Refused)
    async def refused(_: object, exc: Refused) -> Response:
        text = exc.reason if exc.reason.endswith("\n") else exc.reason + "\n"
        return PlainTextResponse(text, status_code=exc.status, media_type=exc.media_type)

    @app.post("/add-checkpoint", response_class=PlainTextResponse)
    async def add_checkpoint(request: Request) -> Response:
        # the body is read as it is, whatever Content-Type the log sends, and never beyond MAX_BODY
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Refused(413, "the request is too large")
        line = await run_in_threadpool(svc.add_checkpoint, bytes(body))
        return PlainTextResponse(line, media_type="text/plain; charset=utf-8")

    @app.get("/", response_class=PlainTextResponse)
    def about() -> Response:
        lines = [f"complai witness {svc.name}", *(f"log {o}" for o in sorted(svc.logs))]
        return PlainTextResponse("\n".join(lines) + "\n")

    return app
