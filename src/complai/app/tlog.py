"""The ledger as a C2SP tlog-tiles log (c2sp.org/tlog-tiles): the latest signed checkpoint, the Merkle
tree as tiles of 256 hashes, and the entries as bundles, all limited to what that checkpoint commits to.

The checkpoint and the hash tiles are hashes and signatures only: anyone may read them, so this is a
door of the workspace of its own (`Workspace.transparency_log()`), with no principal. The entries
(pseudonyms, digests, who did what for which purpose) are the auditor's: the session's
`ledger_entry_bundle` checks the audit action; the service hands them out without a token only when its
operator says so (`complai serve --public-ledger`)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.ledger.checkpoint import SignedNote
from complai.ledger.log import Ledger

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
MAX_ENTRY = 0xFFFF  # entry bundles prefix each entry with a big-endian uint16 length


@dataclass(frozen=True)
class Tile:
    """Bytes of a tile or an entry bundle, and whether it is full (immutable forever) or partial."""

    data: bytes
    full: bool


def _check_coordinates(level: int, index: int, width: int) -> None:
    if not 0 <= level <= MAX_LEVEL or index < 0 or not 1 <= width <= TILE_WIDTH:
        raise InvalidInput("a tile has a level 0..63, a non-negative index and a width 1..256")


class TransparencyLog:
    """The public, read-only face of the ledger: checkpoint and tiles; entry bundles for whoever the
    caller has authorised."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @property
    def origin(self) -> str:
        return self._ledger.origin

    def checkpoint(self) -> SignedNote:
        """The latest signed checkpoint, with the cosignatures stored for it. NotFound before the first."""
        note = self._ledger.latest_checkpoint()
        if note is None:
            raise NotFound("the ledger has no signed checkpoint yet")
        return note

    def _committed(self, level: int) -> int:
        """How many subtree hashes at tree level 8*level the latest checkpoint commits to."""
        return self.checkpoint().checkpoint.size >> (TILE_HEIGHT * level)

    def tile(self, level: int, index: int, width: int = TILE_WIDTH) -> Tile:
        """Tile `index` at `level` (`width` hashes; 256 = full), or NotFound when the latest checkpoint
        does not commit to all of its hashes."""
        _check_coordinates(level, index, width)
        start = index * TILE_WIDTH
        if start + width > self._committed(level):
            raise NotFound(f"tile {level}/{index} of width {width} is beyond the latest checkpoint")
        hashes = self._ledger.subtree_hashes(TILE_HEIGHT * level, start, start + width)
        return Tile(b"".join(hashes), width == TILE_WIDTH)

    def entry_bundle(self, index: int, width: int = TILE_WIDTH) -> Tile:
        """Entry bundle `index`: each entry's exact leaf bytes after a big-endian uint16 length. Refused
        (IntegrityError) when a stored entry no longer hashes to its stored leaf hash."""
        _check_coordinates(0, index, width)
        start = index * TILE_WIDTH
        if start + width > self._committed(0):
            raise NotFound(f"entry bundle {index} of width {width} is beyond the latest checkpoint")
        parts: list[bytes] = []
        for e in self._ledger.entries(start=start, end=start + width, chunk=width):
            if e.seq != start + len(parts):
                raise IntegrityError(f"ledger entry {start + len(parts)} is missing")
            if hashlib.sha256(b"\x00" + e.data).digest() != e.leaf_hash:
                raise IntegrityError(f"ledger entry {e.seq} does not match its leaf hash")
            if len(e.data) > MAX_ENTRY:
                raise IntegrityError(f"ledger entry {e.seq} is too long for an entry bundle")
            parts.append(struct.pack(">H", len(e.data)) + e.data)
        if len(parts) != width:
            raise IntegrityError(f"entries {start}..{start + width - 1} are missing from the ledger")
        return Tile(b"".join(parts), width == TILE_WIDTH)
