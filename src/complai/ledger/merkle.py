"""RFC 9162 (Certificate Transparency v2) Merkle tree math. Pure: no I/O, no store.

Proof generation is split as in transparency-dev/merkle: `inclusion_ranges` / `consistency_ranges`
say which subtrees a proof needs (as leaf ranges), `range_nodes` names the perfect subtrees a range is
made of, and the caller (ledger/log.py) fetches their hashes and folds them with `fold_range`.
`CompactRange` is the tree's right edge as one value (transparency-dev/merkle's compact.Range): the log
head stores it, appends and verifiers extend it, and its root is the tree's root.
Verification follows RFC 9162 section 2.1.3.2 / 2.1.4.2 in the decomposed form used by
transparency-dev/merkle, with the same edge-case rules (see tests/conformance).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from complai.errors import IntegrityError, InvalidInput

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(IntegrityError):
    """A Merkle proof, root or leaf failed verification."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k = the largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- compact ranges and roots ---------------------------------------------------------------------

NodeHash = tuple[int, int, bytes]
"""A perfect subtree's hash, named by its level (0 = leaves) and its index at that level."""


def subtree_levels(size: int) -> list[int]:
    """Levels of the perfect subtrees that make up [0, size), left to right (one per set bit of size)."""
    return [b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]


class CompactRange:
    """The compact range [0, size) of a Merkle tree: the hashes of the perfect subtrees it is made of,
    one per set bit of `size`, largest (leftmost) first. Enough to append leaves and to compute the root
    without reading any older leaf (transparency-dev/merkle's compact.Range, for ranges starting at 0).

    Pure: storage (the ledger head, stored interior nodes) builds one with `CompactRange(size, hashes)`
    or `decode`, and keeps `encode()`.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        if size < 0:
            raise InvalidInput(f"a compact range cannot have negative size {size}")
        stack = list(hashes)
        want = size.bit_count()
        if len(stack) != want or any(len(h) != HASH_SIZE for h in stack):
            raise IntegrityError(f"a compact range of size {size} takes {want} hashes of {HASH_SIZE} bytes")
        self._size = size
        self._hashes = stack

    @classmethod
    def of(cls, leaf_hashes: Iterable[bytes]) -> CompactRange:
        """The compact range of a whole list of leaf hashes."""
        rng = cls()
        rng.extend(leaf_hashes)
        return rng

    @classmethod
    def decode(cls, size: int, blob: bytes) -> CompactRange:
        """The range as `encode` wrote it (its hashes concatenated), for a tree of `size` leaves."""
        if size < 0 or len(blob) != HASH_SIZE * size.bit_count():
            raise IntegrityError(f"a compact range of size {size} does not take {len(blob)} bytes")
        return cls(size, (blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)))

    def encode(self) -> bytes:
        return b"".join(self._hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def nodes(self) -> list[tuple[int, int]]:
        """The perfect subtrees (level, index) whose hashes this range holds, left to right."""
        out, start = [], 0
        for level in subtree_levels(self._size):
            out.append((level, start >> level))
            start += 1 << level
        return out

    def append(self, leaf: bytes, stride: int = 1) -> list[NodeHash]:
        """Append one leaf hash; returns the perfect subtrees it completes at positive levels that are
        multiples of `stride` (level, index, hash)."""
        return self.extend((leaf,), stride)

    def extend(self, leaves: Iterable[bytes], stride: int = 1) -> list[NodeHash]:
        """Append leaf hashes in order; returns the perfect subtrees completed on the way, as `append`."""
        if stride < 1:
            raise InvalidInput(f"stride must be positive, not {stride}")
        sha = hashlib.sha256  # the hot path of every log append: no per-leaf objects beyond the hashes
        stack = self._hashes
        kept: list[NodeHash] = []
        n = self._size
        for h in leaves:
            if len(h) != HASH_SIZE:
                raise InvalidInput(f"leaf hash has {len(h)} bytes, want {HASH_SIZE}")
            m, level = n, 0
            while m & 1:  # one merge per trailing one bit of the leaf index
                h = sha(b"\x01" + stack.pop() + h).digest()
                level += 1
                m >>= 1
                if level % stride == 0:
                    kept.append((level, ((n + 1) >> level) - 1, h))
            stack.append(h)
            n += 1
        self._size = n
        return kept

    def root(self) -> bytes:
        """MTH of the leaves [0, size): the range's hashes folded right to left (EMPTY_ROOT when empty)."""
        if not self._hashes:
            return EMPTY_ROOT
        return fold_range(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]})"


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes (iterative, O(n) hashes, O(log n) memory)."""
    return CompactRange.of(leaf_hashes).root()


# --- which subtrees a proof needs ------------------------------------------------------------------


def _check_sizes(index: int, size: int) -> None:
    if size <= 0 or index < 0 or index >= size:
        raise InvalidInput(f"no leaf {index} in a tree of size {size}")


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges [a, b) whose MTH make up PATH(index, D[size]), in proof order (bottom-up)."""
    _check_sizes(index, size)
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH make up PROOF(size1, D[size2]) (RFC 9162 2.1.4.1), in proof order."""
    if not 0 < size1 <= size2:
        raise InvalidInput(f"no consistency proof from size {size1} to size {size2}")
    out: list[tuple[int, int]] = []
    lo, hi, m, complete = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append((lo, hi))
            break
        k = largest_power_of_two_below(n)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    out.reverse()
    return out


def range_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees (level, index) that make up the aligned leaf range [start, end), left to right."""
    if not 0 <= start < end:
        raise InvalidInput(f"empty or negative leaf range [{start}, {end})")
    nodes: list[tuple[int, int]] = []
    a = start
    while a < end:
        level = (end - a).bit_length() - 1
        while a & ((1 << level) - 1):
            level -= 1
        nodes.append((level, a >> level))
        a += 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its perfect subtrees (largest first, as range_nodes gives)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def subtree_root(level: int, base: Iterable[bytes]) -> bytes:
    """Hash of a perfect subtree from its 2**level leftmost-to-rightmost hashes one stratum down."""
    layer = list(base)
    for _ in range(level):
        layer = [node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    if len(layer) != 1:
        raise IntegrityError("subtree has the wrong number of children")
    return layer[0]


# --- in-memory proofs (tests, offline verifier) ----------------------------------------------------


def _mth(leaves: Sequence[bytes], a: int, b: int) -> bytes:
    return root_of(leaves[a:b])


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof over a list of leaf hashes held in memory."""
    return [_mth(leaves, a, b) for a, b in inclusion_ranges(index, len(leaves))]


def consistency_proof(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    return [_mth(leaves, a, b) for a, b in consistency_ranges(size1, len(leaves))]


# --- verification ----------------------------------------------------------------------------------


def _decompose(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    if index < 0 or size < 0:
        raise ProofError("negative index or size")
    if index >= size:
        raise ProofError(f"index {index} is beyond tree size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(leaf)} bytes, want {HASH_SIZE}")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {inner + border}")
    res = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(res, proof[inner:])


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `proof` shows leaf `index` is in the tree of `size` with `root`."""
    calc = root_from_inclusion(index, size, leaf, proof)
    if calc != root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Raise ProofError unless `proof` shows the tree of size1/root1 is a prefix of size2/root2."""
    if size1 < 0 or size2 < 0:
        raise ProofError("negative tree size")
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) < size1 ({size1})")
    if size1 == 0:
        raise ProofError("consistency from an empty tree is not defined")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if root1 != root2:
            raise ProofError("sizes are equal but the roots differ")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {start + inner + border}")
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if hash1 != root1:
        raise ProofError("consistency proof does not lead to the old root")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if hash2 != root2:
        raise ProofError("consistency proof does not lead to the new root")
