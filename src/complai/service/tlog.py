"""/tlog: the ledger as a C2SP tlog-tiles log (c2sp.org/tlog-tiles), for outside auditors, monitors
and witnesses, who need nothing of complai to check it.

- `GET /tlog/checkpoint`: the latest signed checkpoint (a C2SP signed note, with its cosignatures);
- `GET /tlog/tile/<L>/<N>[.p/<W>]`: 256-wide tiles of 32-byte hashes, N in x###/### path elements;
- `GET /tlog/tile/entries/<N>[.p/<W>]`: entry bundles, each entry (the exact bytes the leaf hash is
  RFC 6962's of) after a big-endian uint16 length.

Only what the latest checkpoint commits to is served. The checkpoint and hash tiles are hashes and
signatures, public; entry bundles carry pseudonyms and digests (no personal data, but who did what for
which purpose) and need a bearer token whose principal may audit, unless the service runs with
`--public-ledger`. Full tiles never change and are cached for a year; partial ones for a minute.
"""

from __future__ import annotations

import contextlib
import gzip
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from complai.app.tlog import MAX_LEVEL, TILE_WIDTH, Tile
from complai.config import ServiceSettings
from complai.errors import InvalidInput
from complai.events import delegation
from complai.service.api.common import NOT_FOUND, PROBLEMS, _doc
from complai.service.deps import WorkspaceDep, bearer_scheme, caller, settings

router = APIRouter(tags=["tlog"])

OCTETS = "application/octet-stream"
FULL_CACHE = "public, max-age=31536000, immutable"
PARTIAL_CACHE = "public, max-age=60"
CHECKPOINT_CACHE = "public, max-age=5"

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_INNER = re.compile(r"x[0-9]{3}")
_LAST = re.compile(r"[0-9]{3}")


def encode_index(n: int) -> str:
    """N as tlog-tiles path elements: zero-padded groups of 3 digits, all but the last prefixed with x."""
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """`tile/<L>/<N>[.p/<W>]` (L = "entries" for entry bundles)."""
    suffix = f".p/{width}" if width < TILE_WIDTH else ""
    return f"tile/{level}/{encode_index(index)}{suffix}"


def parse_index(path: str) -> tuple[int, int]:
    """(index, width) from `<N>[.p/<W>]`; InvalidInput unless it is the one canonical encoding."""
    parts = path.split("/")
    width = TILE_WIDTH
    if len(parts) >= 2 and parts[-2].endswith(".p"):
        w = parts[-1]
        if not _DECIMAL.fullmatch(w) or not 1 <= int(w) < TILE_WIDTH:
            raise InvalidInput("a partial tile's width is a decimal from 1 to 255")
        width = int(w)
        parts = [*parts[:-2], parts[-2][:-2]]
    if len(parts) > 7 or not _LAST.fullmatch(parts[-1]) or not all(_INNER.fullmatch(p) for p in parts[:-1]):
        raise InvalidInput("a tile index is 3-digit path elements, all but the last prefixed with x")
    index = int("".join(p.lstrip("x") for p in parts))
    if encode_index(index) != "/".join(parts):
        raise InvalidInput("a tile index has no leading zero path elements")
    return index, width


def _tile_response(request: Request, tile: Tile, private: bool = False) -> Response:
    """The tile's bytes with its caching headers; gzip-compressed when the client takes it (entry
    bundles compress well); readable by scripts of any origin unless private."""
    cache = FULL_CACHE if tile.full else PARTIAL_CACHE
    headers = {"Cache-Control": cache.replace("public", "private") if private else cache, "Vary": "Accept-Encoding"}
    if not private:
        headers["Access-Control-Allow-Origin"] = "*"
    data = tile.data
    if "gzip" in request.headers.get("accept-encoding", "").lower() and len(data) > 512:
        data = gzip.compress(data, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=OCTETS, headers=headers)


def _octets(description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}}


BAD_PATH: dict[int | str, dict[str, Any]] = {400: _doc("Not a tlog-tiles path (level, index or width)")}
BEYOND: dict[int | str, dict[str, Any]] = {404: _doc("Beyond what the latest checkpoint commits to, or no checkpoint")}


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint (C2SP signed note, with its witnesses' cosignatures)",
    response_class=Response,
    responses={
        200: {"description": "A C2SP checkpoint", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **NOT_FOUND,
    },
)
def checkpoint(ws: WorkspaceDep) -> Response:
    note = ws.transparency_log().checkpoint()
    headers = {"Cache-Control": CHECKPOINT_CACHE, "Access-Control-Allow-Origin": "*"}
    return Response(note.text(), media_type="text/plain; charset=utf-8", headers=headers)


@router.get(
    "/tile/entries/{index:path}",
    summary="An entry bundle: each entry's leaf bytes after a big-endian uint16 length",
    description="Needs a bearer token whose principal may audit, unless the service runs with --public-ledger.",
    response_class=Response,
    responses={**_octets("Entry bundle"), **PROBLEMS, **BAD_PATH, **BEYOND, 422: _doc("An entry fails its hash")},
)
def entry_bundle(
    request: Request,
    ws: WorkspaceDep,
    cfg: Annotated[ServiceSettings, Depends(settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    index: Annotated[str, Path(max_length=64, description="<N>[.p/<W>]")],
) -> Response:
    if cfg.public_ledger:
        n, width = parse_index(index)
        return _tile_response(request, ws.transparency_log().entry_bundle(n, width))
    who = caller(request, ws, credentials)
    # an act-as request is recorded as delegation, refusals included, as every other route's is
    with delegation(who.acting, who.principal.name) if who.delegating else contextlib.nullcontext():
        session = ws.session(who, "audit")  # authorise first
        n, width = parse_index(index)
        bundle = session.ledger_entry_bundle(n, width)
    return _tile_response(request, bundle, private=True)


@router.get(
    "/tile/{level}/{index:path}",
    summary="A hash tile: up to 256 concatenated 32-byte Merkle tree hashes at level 8*L",
    response_class=Response,
    responses={**_octets("Hash tile"), **BAD_PATH, **BEYOND},
)
def hash_tile(
    request: Request,
    ws: WorkspaceDep,
    level: Annotated[str, Path(max_length=2, description="0..63")],
    index: Annotated[str, Path(max_length=64, description="<N>[.p/<W>]")],
) -> Response:
    if not _DECIMAL.fullmatch(level) or int(level) > MAX_LEVEL:
        raise InvalidInput("a tile level is a decimal from 0 to 63")
    n, width = parse_index(index)
    return _tile_response(request, ws.transparency_log().tile(int(level), n, width))
