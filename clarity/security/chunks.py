"""Document content at rest: AES-256-GCM in chunks of 64 KiB, under a key of the document's own.

A document's content is cut into chunks of CHUNK_BYTES (the last one shorter; an empty document
is one empty chunk), each sealed on its own, so an upload is enciphered as it arrives, a download
is streamed, and a byte range is served by opening only the chunks it covers. A sealed chunk is
``nonce (12 bytes) || ciphertext+tag``:

- the key is HKDF-SHA256 of the data key with the document's id, so each document has its own
  key: a chunk of another document fails even under the same data key, and random 96-bit nonces
  stay far below their collision bound (a 25 MiB document is 400 chunks);
- the associated data binds the document id, the chunk's index and whether it is the final chunk,
  so a chunk moved to another position or document, or with its final flag changed, fails. A
  dropped final chunk leaves a last chunk that says it is not final, and a chunk added after the
  final one cannot be sealed without the key: the reader (clarity.repositories.documents) checks
  that the chunks are exactly 0..n-1 with only the last one final.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarity.errors import DecryptionError

CHUNK_BYTES = 64 * 1024
NONCE_BYTES = 12
TAG_BYTES = 16


class ChunkCipher:
    """Seals and opens the chunks of one document under its own key."""

    def __init__(self, data_key: bytes, document_id):
        self.document_id = document_id
        subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                      info=f"clarity document chunks {document_id}".encode()).derive(data_key)
        self._aead = AESGCM(subkey)

    def seal(self, index: int, final: bool, plaintext: bytes) -> bytes:
        """``nonce || ciphertext+tag`` of one chunk."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, self._aad(index, final))

    def open(self, index: int, final: bool, sealed: bytes) -> bytes:
        """The plaintext of a chunk sealed at this index with this final flag for this document;
        DecryptionError (naming the document and index only) for anything else."""
        sealed = bytes(sealed)
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad(index, final))
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce and a tag
            raise DecryptionError(f"chunk {index} of document {self.document_id} failed authentication: "
                                  "altered, moved or from another document") from None

    def _aad(self, index: int, final: bool) -> bytes:
        return f"document_chunks.sealed:{self.document_id}:{index}:{'final' if final else 'more'}".encode()


def with_final_flag(pieces: Iterable[bytes]) -> Iterator[tuple[int, bool, bytes]]:
    """``(index, final, piece)`` for each piece, the last one flagged final; an empty input is
    one empty final piece, so every document has a final chunk whose absence can be noticed."""
    index, held = 0, None
    for piece in pieces:
        if held is not None:
            yield index, False, held
            index += 1
        held = piece
    yield index, True, b"" if held is None else held


def last_index(size: int) -> int:
    """The index of the final chunk of ``size`` bytes of content."""
    return max(0, (size - 1) // CHUNK_BYTES)


def chunk_length(size: int, index: int) -> int:
    """How many bytes of ``size`` bytes of content the chunk at ``index`` holds."""
    return CHUNK_BYTES if index < last_index(size) else size - last_index(size) * CHUNK_BYTES
