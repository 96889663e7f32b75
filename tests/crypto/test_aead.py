from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complai.crypto.aead import OVERHEAD, DataKey
from complai.crypto.signing import ALG_COSIGNATURE_V1, ALG_ED25519, Signer, VerifierKey
from complai.crypto.stream import CHUNK, DecryptingReader, EncryptingWriter, read_header
from complai.errors import IntegrityError


@given(st.binary(max_size=2000), st.binary(max_size=64))
@settings(max_examples=100)
def test_seal_open_round_trip(plaintext: bytes, ad: bytes) -> None:
    key = DataKey(os.urandom(32))
    blob = key.seal(plaintext, ad)
    assert len(blob) == len(plaintext) + OVERHEAD
    assert key.open(blob, ad) == plaintext


def test_associated_data_is_bound() -> None:
    key = DataKey(os.urandom(32))
    blob = key.seal(b"income=52000", b"dataset|rid-1")
    with pytest.raises(IntegrityError, match="authentication"):
        key.open(blob, b"dataset|rid-2")


def test_key_commitment_refuses_another_key() -> None:
    a, b = DataKey(os.urandom(32)), DataKey(os.urandom(32))
    blob = a.seal(b"secret", b"ad")
    with pytest.raises(IntegrityError, match="not made with this key"):
        b.open(blob, b"ad")
    # forging the commitment tag does not help: AES-GCM under b still fails
    forged = blob[:13] + b.seal(b"x", b"ad")[13:45] + blob[45:]
    with pytest.raises(IntegrityError):
        b.open(forged, b"ad")


@given(st.integers(0, 60), st.integers(0, 7))
def test_any_bit_flip_is_refused(pos: int, bit: int) -> None:
    key = DataKey(b"\x07" * 32)
    blob = bytearray(key.seal(b"0123456789", b"ad"))
    blob[pos % len(blob)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        key.open(bytes(blob), b"ad")


def test_nonces_are_fresh() -> None:
    key = DataKey(os.urandom(32))
    nonces = {key.seal(b"same", b"ad")[1:13] for _ in range(2000)}
    assert len(nonces) == 2000


def test_repr_hides_key_material() -> None:
    raw = os.urandom(32)
    assert raw.hex() not in repr(DataKey(raw))
    s = Signer.generate("x")
    assert "Signer(name='x'" in repr(s)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_stream_round_trip(size: int) -> None:
    key, header = os.urandom(32), b'{"h":1}'
    out = io.BytesIO()
    w = EncryptingWriter(out, key, header)
    data = os.urandom(size)
    w.write(data[: size // 2])
    w.write(data[size // 2 :])
    w.close()
    src = io.BytesIO(out.getvalue())
    assert read_header(src) == header
    assert DecryptingReader(src, key, header).read() == data


def _stream(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    w = EncryptingWriter(out, key, b"hdr")
    w.write(data)
    w.close()
    return out.getvalue()


def test_stream_truncation_splicing_and_tampering_fail() -> None:
    key = os.urandom(32)
    blob = _stream(os.urandom(2 * CHUNK + 5), key)
    for broken in (blob[:-1], blob[: len(blob) // 2], blob + b"x", blob[:100] + bytes([blob[100] ^ 1]) + blob[101:]):
        src = io.BytesIO(broken)
        read_header(src)
        with pytest.raises(IntegrityError):
            DecryptingReader(src, key, b"hdr").read()
    src = io.BytesIO(blob)
    read_header(src)
    with pytest.raises(IntegrityError):
        DecryptingReader(src, os.urandom(32), b"hdr").read()
    # a header swapped for another one fails too (chunks are bound to it)
    src = io.BytesIO(blob)
    read_header(src)
    with pytest.raises(IntegrityError):
        DecryptingReader(src, key, b"other").read()


@given(st.sampled_from([ALG_ED25519, ALG_COSIGNATURE_V1]), st.from_regex(r"[a-z0-9./-]{1,30}", fullmatch=True))
@settings(max_examples=50)
def test_verifier_keys_round_trip(alg: int, name: str) -> None:
    signer = Signer.generate(name, alg)
    vk = VerifierKey.parse(signer.verifier.encode())
    assert vk == signer.verifier
    assert vk.verify(signer.sign(b"m"), b"m") and not vk.verify(signer.sign(b"m"), b"n")
