"""Chunked AEAD for files of any size (the STREAM construction of Hoang, Reyhanitabar, Rogaway and
Vizár, 2015, over AES-256-GCM): each chunk's nonce is a random 7-byte prefix, a 4-byte chunk counter
and a last-chunk flag, and every chunk is bound to the file header. Truncation, reordering, dropping or
splicing chunks all fail authentication."""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from complai.errors import IntegrityError

CHUNK = 1 << 20


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A write-only file object that seals what it is given in chunks to `out`."""

    def __init__(self, out: BinaryIO, key: bytes, header: bytes) -> None:
        self._out = out
        self._aead = AESGCM(key)
        self._prefix = os.urandom(7)
        self._header = header
        self._buf = bytearray()
        self._counter = 0
        out.write(struct.pack(">I", len(header)) + header + self._prefix)

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > CHUNK:
            self._emit(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def _emit(self, chunk: bytes, last: bool) -> None:
        if self._counter >= 0xFFFFFFFF:
            raise ValueError("stream too long")
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, last), chunk, self._header)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1

    def close(self) -> None:
        self._emit(bytes(self._buf), last=True)
        self._buf.clear()

    def flush(self) -> None:
        pass


def read_header(src: BinaryIO) -> bytes:
    raw = src.read(4)
    if len(raw) != 4:
        raise IntegrityError("file is truncated")
    (n,) = struct.unpack(">I", raw)
    if n > 1 << 20:
        raise IntegrityError("file header is implausibly large")
    header = src.read(n)
    if len(header) != n:
        raise IntegrityError("file is truncated")
    return header


class DecryptingReader:
    """Opens a stream written by EncryptingWriter (after read_header); read() returns verified plaintext."""

    def __init__(self, src: BinaryIO, key: bytes, header: bytes) -> None:
        self._src = src
        self._aead = AESGCM(key)
        self._header = header
        self._prefix = src.read(7)
        self._counter = 0
        self._buf = b""
        self._done = False

    def _next(self) -> None:
        raw = self._src.read(4)
        if len(raw) != 4:
            raise IntegrityError("file is truncated (no final chunk)")
        (n,) = struct.unpack(">I", raw)
        if n > CHUNK + 16:
            raise IntegrityError("file chunk is malformed")
        sealed = self._src.read(n)
        if len(sealed) != n:
            raise IntegrityError("file is truncated")
        for last in (False, True):
            try:
                chunk = self._aead.decrypt(_nonce(self._prefix, self._counter, last), sealed, self._header)
            except InvalidTag:
                continue
            self._counter += 1
            self._buf += chunk
            if last:
                if self._src.read(1):
                    raise IntegrityError("data after the final chunk")
                self._done = True
            return
        raise IntegrityError("file failed authentication (tampered, or the wrong key)")

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buf) < size):
            self._next()
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out
