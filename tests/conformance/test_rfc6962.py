"""RFC 6962 / RFC 9162 conformance against transparency-dev/merkle's golden vectors (see data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from complai.ledger import merkle

VECTORS = json.loads((Path(__file__).parent / "data" / "rfc6962_vectors.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["tree"]["leaves"]]
LEAF_HASHES = [merkle.leaf_hash(x) for x in LEAVES]
h = bytes.fromhex


def test_hasher_vectors() -> None:
    for v in VECTORS["hasher_vectors"]:
        fn, inp = v["function"], v["input"]
        if fn == "empty_root":
            got = merkle.root_of([])
        elif fn == "leaf_hash":
            got = merkle.leaf_hash(h(inp["leaf_data"]))
        else:
            got = merkle.node_hash(h(inp["left"]), h(inp["right"]))
        assert got.hex() == v["expected"], v["desc"]


@pytest.mark.parametrize("size", range(9))
def test_roots_by_size(size: int) -> None:
    assert merkle.root_of(LEAF_HASHES[:size]).hex() == VECTORS["tree"]["roots_by_size"][str(size)]


def test_every_inclusion_proof_of_the_8_leaf_tree() -> None:
    for v in VECTORS["derived"]["inclusion"]:
        proof = merkle.inclusion_proof(v["leaf_index"], LEAF_HASHES[: v["tree_size"]])
        assert [p.hex() for p in proof] == v["proof"]
        merkle.verify_inclusion(v["leaf_index"], v["tree_size"], h(v["leaf_hash"]), proof, h(v["root"]))


def test_every_consistency_proof_of_the_8_leaf_tree() -> None:
    for v in VECTORS["derived"]["consistency"]:
        proof = merkle.consistency_proof(v["size1"], LEAF_HASHES[: v["size2"]])
        assert [p.hex() for p in proof] == v["proof"]
        merkle.verify_consistency(v["size1"], v["size2"], h(v["root1"]), h(v["root2"]), proof)


def _id(v: dict[str, Any]) -> str:
    return v["file"]


@pytest.mark.parametrize("v", VECTORS["inclusion"], ids=_id)
def test_inclusion_vectors(v: dict[str, Any]) -> None:
    args = (v["leaf_index"], v["tree_size"], h(v["leaf_hash"]), [h(p) for p in v["proof"]], h(v["root"]))
    if v["want_error"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("v", VECTORS["consistency"], ids=_id)
def test_consistency_vectors(v: dict[str, Any]) -> None:
    args = (v["size1"], v["size2"], h(v["root1"]), h(v["root2"]), [h(p) for p in v["proof"]])
    if v["want_error"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_vector_counts_match_the_readme() -> None:
    for kind in ("inclusion", "consistency"):
        valid = sum(not v["want_error"] for v in VECTORS[kind])
        assert (valid, len(VECTORS[kind]) - valid) == (6, 92)
