"""PHI at rest: AES-256-GCM envelopes bound to their row, and blind indexes for lookups.

An envelope is ``nonce (12 bytes) || ciphertext+tag`` over the JSON of the fields; its
associated data is ``table.column:row_id`` so a ciphertext copied into another row, or
altered, fails authentication instead of decrypting to someone else's data. The key id is
stored beside the envelope so several keys can be live while keys rotate.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from collections.abc import Mapping

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarity.errors import DecryptionError
from clarity.security.chunks import ChunkCipher

NONCE_BYTES = 12


def generate_key() -> str:
    """A new random 256-bit key, urlsafe-base64 encoded, for CLARITY_DATA_KEYS and friends."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def normalize(value: str) -> str:
    """Case-, accent- and spacing-insensitive form of a value, for blind indexes."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


class Keyring:
    """Data keys (one active for writes), the blind-index root key, and while a blind-index
    rotation is under way the next one."""

    def __init__(self, data_keys: Mapping[str, bytes], active_key_id: str, blind_index_key: bytes,
                 next_blind_index_key: bytes | None = None):
        if active_key_id not in data_keys:
            raise ValueError("the active data key id is not among the data keys")
        self._ciphers = {kid: AESGCM(key) for kid, key in data_keys.items()}
        self._data_keys = dict(data_keys)  # the roots of the documents' per-document subkeys
        self.active_key_id = active_key_id
        self._blind_roots = {"current": blind_index_key, "next": next_blind_index_key}
        self._blind_keys: dict[tuple[str, str], bytes] = {}

    @property
    def rotating_blind_index(self) -> bool:
        return self._blind_roots["next"] is not None

    def encrypt(self, table: str, column: str, row_id, fields: dict) -> tuple[bytes, str]:
        """Seal ``fields`` for one row; return (envelope, key id)."""
        nonce = os.urandom(NONCE_BYTES)
        plaintext = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        sealed = self._ciphers[self.active_key_id].encrypt(nonce, plaintext, _aad(table, column, row_id))
        return nonce + sealed, self.active_key_id

    def decrypt(self, table: str, column: str, row_id, envelope: bytes, key_id: str) -> dict:
        """Open an envelope; raise DecryptionError when the key is unknown or the envelope fails
        authentication (altered, or moved from another row)."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(f"{table}.{column} of row {row_id} is under an unknown key id")
        envelope = bytes(envelope)
        try:
            plaintext = cipher.decrypt(envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], _aad(table, column, row_id))
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce and a tag
            raise DecryptionError(
                f"{table}.{column} of row {row_id} failed authentication: altered or copied from another row"
            ) from None
        return orjson.loads(plaintext)

    def chunk_cipher(self, document_id, key_id: str | None = None) -> tuple[ChunkCipher, str]:
        """The cipher of one document's content chunks under ``key_id`` (default: the active
        key), with that key id; DecryptionError when the key id is not configured."""
        key_id = key_id or self.active_key_id
        key = self._data_keys.get(key_id)
        if key is None:
            raise DecryptionError(f"the content of document {document_id} is under an unknown key id")
        return ChunkCipher(key, document_id), key_id

    def blind_index(self, table: str, column: str, value: str | None, *, root: str = "current") -> bytes | None:
        """HMAC-SHA256 of the normalized value under a key derived for this column only, from
        the current root key (or the ``"next"`` one; None when there is none)."""
        if value is None or self._blind_roots[root] is None:
            return None
        scope = f"{table}.{column}"
        key = self._blind_keys.get((root, scope))
        if key is None:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=f"clarity blind index {scope}".encode()).derive(self._blind_roots[root])
            self._blind_keys[(root, scope)] = key
        return hmac.new(key, normalize(value).encode(), hashlib.sha256).digest()

    def lookup_indexes(self, table: str, column: str, value: str | None) -> list[bytes] | None:
        """The value's blind index under every configured root key (lookups match any)."""
        if value is None:
            return None
        return [h for h in (self.blind_index(table, column, value, root=root) for root in self._blind_roots) if h]


def _aad(table: str, column: str, row_id) -> bytes:
    return f"{table}.{column}:{row_id}".encode()


def reencrypt_rows(keyring: Keyring, table: str, column: str, rows, *, key_id_column: str, carry=()):
    """Re-encipher ``rows`` (dicts with ``id``, ``column`` and ``key_id_column``) under the
    active key, for a set-based store. Returns (params, failed): ``params`` holds one array per
    column, ``ids``, ``old_key_ids``, ``envelopes``, ``key_ids`` and ``<name>s`` for each name in
    ``carry`` (e.g. a version to check), or None when nothing decrypted; ``failed`` the ids
    whose envelope did not decrypt."""
    params = {"ids": [], "old_key_ids": [], "envelopes": [], "key_ids": [], **{f"{name}s": [] for name in carry}}
    failed = []
    for row in rows:
        try:
            fields = keyring.decrypt(table, column, row["id"], row[column], row[key_id_column])
        except DecryptionError:
            failed.append(row["id"])
            continue
        envelope, key_id = keyring.encrypt(table, column, row["id"], fields)
        for name, value in (("ids", row["id"]), ("old_key_ids", row[key_id_column]), ("envelopes", envelope),
                            ("key_ids", key_id), *((f"{name}s", row[name]) for name in carry)):
            params[name].append(value)
    return (params if params["ids"] else None), failed
