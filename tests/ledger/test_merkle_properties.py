"""Properties of the pure Merkle code over random trees (hypothesis)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complai.errors import IntegrityError, InvalidInput
from complai.ledger import merkle


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(i.to_bytes(8, "big")).digest()) for i in range(n)]


def reference_root(hs: list[bytes]) -> bytes:
    """MTH straight from the RFC's recursive definition."""
    if len(hs) == 1:
        return hs[0]
    k = merkle.largest_power_of_two_below(len(hs))
    return merkle.node_hash(reference_root(hs[:k]), reference_root(hs[k:]))


def flip(data: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(data)
    b[pos % len(b)] ^= 1 << bit
    return bytes(b)


sizes = st.integers(min_value=1, max_value=300)


@given(sizes)
def test_iterative_root_equals_recursive_definition(n: int) -> None:
    hs = leaves(n)
    assert merkle.root_of(hs) == reference_root(hs)


@given(st.data())
@settings(max_examples=200)
def test_inclusion_proofs_verify_and_any_flip_breaks_them(data: st.DataObject) -> None:
    n = data.draw(sizes)
    i = data.draw(st.integers(0, n - 1))
    hs = leaves(n)
    root = merkle.root_of(hs)
    proof = merkle.inclusion_proof(i, hs)
    merkle.verify_inclusion(i, n, hs[i], proof, root)
    bit = data.draw(st.integers(0, 7))
    pos = data.draw(st.integers(0, 31))
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(i, n, flip(hs[i], pos, bit), proof, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(i, n, hs[i], proof, flip(root, pos, bit))
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:j], flip(proof[j], pos, bit), *proof[j + 1 :]]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(i, n, hs[i], bad, root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(i, n, hs[i], proof[:-1], root)
    if n > 1:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion((i + 1) % n, n, hs[i], proof, root)


@given(st.data())
@settings(max_examples=200)
def test_consistency_proofs_verify_and_any_flip_breaks_them(data: st.DataObject) -> None:
    n2 = data.draw(sizes)
    n1 = data.draw(st.integers(1, n2))
    hs = leaves(n2)
    r1, r2 = merkle.root_of(hs[:n1]), merkle.root_of(hs)
    proof = merkle.consistency_proof(n1, hs)
    merkle.verify_consistency(n1, n2, r1, r2, proof)
    bit = data.draw(st.integers(0, 7))
    pos = data.draw(st.integers(0, 31))
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(n1, n2, flip(r1, pos, bit), r2, proof)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(n1, n2, r1, flip(r2, pos, bit), proof)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:j], flip(proof[j], pos, bit), *proof[j + 1 :]]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(n1, n2, r1, r2, bad)


@given(st.data())
def test_a_rewritten_history_is_never_consistent(data: st.DataObject) -> None:
    n2 = data.draw(st.integers(2, 200))
    n1 = data.draw(st.integers(1, n2 - 1))
    k = data.draw(st.integers(0, n1 - 1))
    hs = leaves(n2)
    forged = list(hs)
    forged[k] = merkle.leaf_hash(b"rewritten")
    proof = merkle.consistency_proof(n1, forged)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(n1, n2, merkle.root_of(hs[:n1]), merkle.root_of(forged), proof)


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_range_nodes_tile_the_range(a: int, width: int) -> None:
    # ranges produced by the RFC recursion are aligned; build one: a multiple of its top power
    nodes = merkle.range_nodes(a, a + width)
    pos = a
    for level, idx in nodes:
        assert idx << level == pos
        pos += 1 << level
    assert pos == a + width


@given(st.integers(0, 300), st.sets(st.integers(1, 300), max_size=8))
def test_compact_range_root_tracks_appends(n: int, checked: set[int]) -> None:
    hs = leaves(n)
    rng = merkle.CompactRange()
    assert rng.root() == merkle.EMPTY_ROOT
    for i, x in enumerate(hs):
        rng.append(x)
        assert rng.size == i + 1
        assert [lvl for lvl, _ in rng.nodes()] == merkle.subtree_levels(i + 1)
        if i + 1 in checked or i + 1 == n:
            assert rng.root() == reference_root(hs[: i + 1])


@given(st.integers(0, 300), st.integers(0, 300), st.integers(1, 5))
def test_extend_reports_exactly_the_completed_subtrees(start: int, count: int, stride: int) -> None:
    hs = leaves(start + count)
    rng = merkle.CompactRange.of(hs[:start])
    kept = rng.extend(hs[start:], stride)
    # every perfect subtree whose last leaf is in [start, start + count), at a positive multiple of stride
    expected = []
    for end in range(start + 1, start + count + 1):
        level = 1
        while end % (1 << level) == 0:
            if level % stride == 0:
                idx = end // (1 << level) - 1
                expected.append((level, idx, reference_root(hs[idx << level : end])))
            level += 1
    assert sorted(kept) == sorted(expected)
    assert rng == merkle.CompactRange.of(hs)
    assert rng.root() == merkle.root_of(hs)


@given(st.integers(0, 200), st.lists(st.integers(0, 40), max_size=6))
def test_extending_in_chunks_equals_appending_one_by_one(start: int, chunks: list[int]) -> None:
    hs = leaves(start + sum(chunks))
    one = merkle.CompactRange.of(hs[:start])
    many = one.copy()
    pos = start
    for c in chunks:
        many.extend(hs[pos : pos + c])
        pos += c
    for x in hs[start:]:
        one.append(x)
    assert one == many and one.size == len(hs) and one.hashes == many.hashes


@given(st.integers(0, 300))
def test_compact_range_from_stored_subtrees_and_its_encoding(n: int) -> None:
    hs = leaves(n)
    rng = merkle.CompactRange.of(hs)
    # the range is the perfect subtrees range_nodes(0, n) names, as the log rebuilds it from storage
    stored = [reference_root(hs[i << lvl : (i + 1) << lvl]) for lvl, i in rng.nodes()]
    if n:
        assert rng.nodes() == merkle.range_nodes(0, n)
    assert merkle.CompactRange(n, stored) == rng
    assert merkle.CompactRange.decode(n, rng.encode()) == rng
    assert len(rng.encode()) == 32 * n.bit_count()
    with pytest.raises(IntegrityError):
        merkle.CompactRange.decode(n, rng.encode() + bytes(32))
    with pytest.raises(IntegrityError):
        merkle.CompactRange(n, [*stored, merkle.EMPTY_ROOT])


def test_compact_range_refuses_bad_input() -> None:
    with pytest.raises(InvalidInput):
        merkle.CompactRange(-1)
    with pytest.raises(InvalidInput):
        merkle.CompactRange().append(b"short")
    with pytest.raises(InvalidInput):
        merkle.CompactRange().extend([], stride=0)
