"""/tlog as a C2SP tlog-tiles log, checked by an independent verifier written here: hashlib and
cryptography's Ed25519 only, none of complai's Merkle or note code. It fetches the signed checkpoint,
checks the log's signature, fetches the entry bundles and tiles, recomputes the root per RFC 6962 and
matches it; tampering with the store at rest must break that or be refused."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from sqlalchemy import text

from complai.app.workspace import Workspace
from complai.service.app import create_app
from tests.ledger.helpers import fill
from tests.service.conftest import bearer, settings_for

VECTORS = json.loads((Path(__file__).parents[1] / "conformance" / "data" / "rfc6962_vectors.json").read_text())

# --- the independent verifier (no complai imports) ------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 Merkle Tree Hash over leaf hashes (k = largest power of two < n)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


def index_path(n: int) -> str:
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse_vkey(vkey: str) -> tuple[str, bytes, bytes]:
    """(name, key id, Ed25519 public key) of a note verifier key NAME+HEXID+BASE64(0x01 || key)."""
    name, hexid, blob = vkey.split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 0x01 and len(raw) == 33
    kid = hashlib.sha256(name.encode() + b"\n" + b"\x01" + raw[1:]).digest()[:4]
    assert kid.hex() == hexid
    return name, kid, raw[1:]


def verify_checkpoint(note: str, vkey: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a C2SP checkpoint whose Ed25519 signature by `vkey` verifies."""
    name, kid, public = parse_vkey(vkey)
    body, sigs = note.split("\n\n", 1)
    body += "\n"
    origin, size, root_b64 = body.split("\n")[:3]
    assert sigs.endswith("\n")
    for line in sigs[:-1].split("\n"):
        dash, sig_name, blob = line.split(" ")
        raw = base64.b64decode(blob)
        if dash == "\u2014" and sig_name == name and raw[:4] == kid:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.encode())  # raises if bad
            root = base64.b64decode(root_b64)
            assert len(root) == 32 and str(int(size)) == size
            return origin, int(size), root
    raise AssertionError("no signature by the log key")


def split_bundle(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack(">H", data[i : i + 2])
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    assert i == len(data)
    return out


def fetch_log(get: Callable[[str], bytes], vkey: str) -> tuple[int, bytes, list[bytes]]:
    """Verify the whole log from /tlog: the checkpoint's signature, every entry bundle, every tile; the
    root recomputed from the bundles must be the checkpoint's. (size, root, entries)."""
    _, size, root = verify_checkpoint(get("checkpoint").decode(), vkey)
    entries: list[bytes] = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        suffix = "" if width == 256 else f".p/{width}"
        bundle = split_bundle(get(f"tile/entries/{index_path(n)}{suffix}"))
        assert len(bundle) == width
        entries += bundle
    leaves = [leaf_hash(e) for e in entries]
    assert mth(leaves) == root, "the entries do not lead to the signed root"
    # hash tiles: level 0 holds the leaf hashes, level l > 0 the MTH of each full tile below
    level_hashes = leaves
    level = 0
    while level_hashes:
        for n in range((len(level_hashes) + 255) // 256):
            chunk = level_hashes[n * 256 : n * 256 + 256]
            suffix = "" if len(chunk) == 256 else f".p/{len(chunk)}"
            assert get(f"tile/{level}/{index_path(n)}{suffix}") == b"".join(chunk), f"tile {level}/{n}"
        level_hashes = [mth(level_hashes[i : i + 256]) for i in range(0, len(level_hashes) - 255, 256)]
        level += 1
    return size, root, entries


# --- the service -----------------------------------------------------------------------------------

SIZE_HINT = 600  # two full tiles and a partial one at level 0, a partial tile at level 1


@pytest.fixture
def log_ws(ws: Workspace) -> Workspace:
    fill(ws.ledger, SIZE_HINT)
    ws.session("owner", "audit").ledger_checkpoint()
    return ws


@pytest.fixture
def tlog(log_ws: Workspace, client: TestClient, owner_token: str) -> Callable[[str], bytes]:
    def get(path: str) -> bytes:
        r = client.get(f"/tlog/{path}", headers=bearer(owner_token))
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.content

    return get


def test_the_independent_verifier_agrees_with_the_rfc_vectors() -> None:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in VECTORS["tree"]["leaves"]]
    for size, root in VECTORS["tree"]["roots_by_size"].items():
        assert mth(leaves[: int(size)]).hex() == root
    assert index_path(1234067) == "x001/x234/067" and index_path(0) == "000"


def test_an_outside_verifier_recomputes_the_signed_root(any_ws: Workspace, any_client: TestClient) -> None:
    """On every backend the run has: the tiles come from each store's stratified nodes."""
    fill(any_ws.ledger, SIZE_HINT)
    any_ws.session("owner", "audit").ledger_checkpoint()
    token = any_ws.session("owner", "security").create_token("owner", "P1D").token

    def get(path: str) -> bytes:
        r = any_client.get(f"/tlog/{path}", headers=bearer(token))
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.content

    vkey = any_ws.session("owner", "audit").ledger_status().log_key.encode()
    size, _, entries = fetch_log(get, vkey)
    assert size >= SIZE_HINT  # the probes plus whatever the workspace recorded when it was created
    assert size < any_ws.ledger.head().size  # its own entry (and later ones) are not served yet
    assert json.loads(entries[size - 1])["type"] == "test.probe"


def test_headers_limits_and_who_reads_entries(
    log_ws: Workspace, client: TestClient, owner_token: str, token_for: Callable[..., str]
) -> None:
    size = log_ws.ledger.latest_checkpoint().checkpoint.size
    r = client.get("/tlog/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "max-age=5" in r.headers["cache-control"]
    full = client.get("/tlog/tile/0/000")
    assert full.headers["content-type"] == "application/octet-stream" and len(full.content) == 8192
    assert "immutable" in full.headers["cache-control"] and "31536000" in full.headers["cache-control"]
    assert full.headers["content-encoding"] == "gzip" and full.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-origin"] == "*"
    plain = client.get("/tlog/tile/0/000", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == full.content
    partial = client.get(f"/tlog/tile/0/002.p/{size - 512}")
    assert partial.status_code == 200 and len(partial.content) == 32 * (size - 512)
    assert "immutable" not in partial.headers["cache-control"]
    # only what the checkpoint commits to: not one hash beyond its size, even though the log has more
    assert log_ws.ledger.head().size > size
    assert client.get(f"/tlog/tile/0/002.p/{size - 512 + 1}").status_code == 404
    assert client.get("/tlog/tile/0/003.p/1").status_code == 404
    assert client.get("/tlog/tile/1/000").status_code == 404  # a full level-1 tile needs 65536 entries
    assert client.get("/tlog/tile/1/000.p/2").status_code == 200
    assert client.get("/tlog/tile/1/000.p/3").status_code == 404
    for bad in ("tile/0/1", "tile/0/x000/001", "tile/00/000", "tile/64/000", "tile/0/000.p/256", "tile/0/000.p/0"):
        assert client.get(f"/tlog/{bad}").status_code in (400, 404), bad
    # the entries need an auditor's token; the hashes do not
    assert client.get("/tlog/tile/entries/000").status_code == 401
    assert client.get("/tlog/tile/entries/000", headers=bearer(owner_token)).status_code == 200
    analyst = token_for("ann", "analyst")
    assert client.get("/tlog/tile/entries/000", headers=bearer(analyst)).status_code == 403
    auditor = token_for("aud", "auditor")
    r = client.get("/tlog/tile/entries/000", headers=bearer(auditor))
    assert r.status_code == 200 and "private" in r.headers["cache-control"]
    assert "access-control-allow-origin" not in r.headers


def test_public_ledger_serves_entries_without_a_token(log_ws: Workspace) -> None:
    settings = dataclasses.replace(settings_for(log_ws), public_ledger=True)
    with TestClient(create_app(settings, workspace=log_ws), raise_server_exceptions=False) as c:

        def get(path: str) -> bytes:
            r = c.get(f"/tlog/{path}")
            assert r.status_code == 200, path
            return r.content

        vkey = log_ws.session("owner", "audit").ledger_status().log_key.encode()
        fetch_log(get, vkey)


def test_no_checkpoint_no_log(ws: Workspace, client: TestClient) -> None:
    assert client.get("/tlog/checkpoint").status_code == 404
    assert client.get("/tlog/tile/0/000.p/1").status_code == 404


def test_an_entry_edited_at_rest_is_refused(log_ws: Workspace, client: TestClient, owner_token: str) -> None:
    with log_ws.store.write() as conn:
        conn.execute(text("UPDATE ledger_entries SET data = :d WHERE seq = 300"), {"d": b'{"type":"test.probe"}'})
    r = client.get("/tlog/tile/entries/001", headers=bearer(owner_token))
    assert r.status_code == 422 and "leaf hash" in r.json()["detail"]
    assert client.get("/tlog/tile/entries/000", headers=bearer(owner_token)).status_code == 200


def test_an_entry_and_its_leaf_hash_edited_at_rest_fail_verification(
    log_ws: Workspace, tlog: Callable[[str], bytes]
) -> None:
    vkey = log_ws.session("owner", "audit").ledger_status().log_key.encode()
    fetch_log(tlog, vkey)  # intact
    forged = json.dumps({"type": "test.probe", "n": -1}).encode()
    with log_ws.store.write() as conn:
        conn.execute(
            text("UPDATE ledger_entries SET data = :d, leaf_hash = :h WHERE seq = 300"),
            {"d": forged, "h": leaf_hash(forged)},
        )
    with pytest.raises(AssertionError, match="signed root"):
        fetch_log(tlog, vkey)


def test_a_forged_checkpoint_fails_verification(log_ws: Workspace, tlog: Callable[[str], bytes]) -> None:
    vkey = log_ws.session("owner", "audit").ledger_status().log_key.encode()
    with log_ws.store.write() as conn:
        note = conn.execute(text("SELECT note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")).scalar_one()
        lines = note.split("\n")
        lines[1] = str(int(lines[1]) - 1)
        conn.execute(
            text("UPDATE ledger_checkpoints SET note = :n WHERE note = :o"), {"n": "\n".join(lines), "o": note}
        )
    with pytest.raises(InvalidSignature):
        fetch_log(tlog, vkey)
