"""The chunked cipher of document content: each chunk opens only at its own place in its own
document, under its own final flag; anything else fails, naming no content."""
import os
import uuid

import pytest

from clarity.errors import DecryptionError
from clarity.security.chunks import CHUNK_BYTES, ChunkCipher, chunk_length, last_index, with_final_flag
from clarity.security.crypto import Keyring
from clarity.services.documents import Body

KEY = os.urandom(32)
DOC, OTHER = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def cipher():
    return ChunkCipher(KEY, DOC)


def test_a_chunk_opens_at_its_index_with_its_final_flag(cipher):
    sealed = cipher.seal(3, False, b"scan bytes")
    assert cipher.open(3, False, sealed) == b"scan bytes"
    assert len(sealed) == 12 + len(b"scan bytes") + 16


def test_sealing_twice_gives_different_ciphertexts(cipher):
    assert cipher.seal(0, True, b"x") != cipher.seal(0, True, b"x")


@pytest.mark.parametrize("index, final", [(4, False), (3, True), (0, False)])
def test_a_chunk_moved_to_another_index_or_with_its_final_flag_changed_fails(cipher, index, final):
    sealed = cipher.seal(3, False, b"scan bytes")
    with pytest.raises(DecryptionError) as raised:
        cipher.open(index, final, sealed)
    assert "scan" not in str(raised.value) and str(DOC) in str(raised.value)


def test_a_chunk_of_another_document_fails_even_under_the_same_data_key(cipher):
    sealed = ChunkCipher(KEY, OTHER).seal(0, True, b"another patient's scan")
    with pytest.raises(DecryptionError):
        cipher.open(0, True, sealed)


def test_a_flipped_bit_anywhere_fails(cipher):
    sealed = bytearray(cipher.seal(0, True, b"x" * 100))
    for position in (0, 11, 12, 60, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            cipher.open(0, True, bytes(altered))


@pytest.mark.parametrize("sealed", [b"", b"\x00" * 11, b"\x00" * 27])
def test_a_chunk_too_short_to_hold_a_nonce_and_a_tag_fails(cipher, sealed):
    with pytest.raises(DecryptionError):
        cipher.open(0, True, sealed)


def test_another_data_key_fails(cipher):
    with pytest.raises(DecryptionError):
        ChunkCipher(os.urandom(32), DOC).open(0, True, cipher.seal(0, True, b"x"))


def test_the_keyring_gives_the_active_keys_cipher_and_refuses_an_unknown_key_id():
    keyring = Keyring({"k1": os.urandom(32), "k2": os.urandom(32)}, "k2", os.urandom(32))
    cipher, key_id = keyring.chunk_cipher(DOC)
    assert key_id == "k2"
    assert keyring.chunk_cipher(DOC, "k2")[0].open(0, True, cipher.seal(0, True, b"x")) == b"x"
    with pytest.raises(DecryptionError):
        keyring.chunk_cipher(DOC, "k1")[0].open(0, True, cipher.seal(0, True, b"x"))
    with pytest.raises(DecryptionError):
        keyring.chunk_cipher(DOC, "gone")


@pytest.mark.parametrize("pieces, flagged", [
    ([], [(0, True, b"")]),
    ([b"a"], [(0, True, b"a")]),
    ([b"a", b"b", b"c"], [(0, False, b"a"), (1, False, b"b"), (2, True, b"c")]),
])
def test_only_the_last_piece_is_final_and_no_pieces_is_one_empty_final_chunk(pieces, flagged):
    assert list(with_final_flag(iter(pieces))) == flagged


@pytest.mark.parametrize("size, last, lengths", [
    (0, 0, {0: 0}),
    (1, 0, {0: 1}),
    (CHUNK_BYTES, 0, {0: CHUNK_BYTES}),
    (CHUNK_BYTES + 1, 1, {0: CHUNK_BYTES, 1: 1}),
    (3 * CHUNK_BYTES, 2, {1: CHUNK_BYTES, 2: CHUNK_BYTES}),
])
def test_the_layout_of_a_documents_chunks_follows_from_its_length(size, last, lengths):
    assert last_index(size) == last
    assert {index: chunk_length(size, index) for index in lengths} == lengths


class Trickle:
    """A stream that answers each read with at most ``step`` bytes, as a socket may."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step, self.position = data, step, 0

    def read(self, n: int) -> bytes:
        piece = self.data[self.position:self.position + min(n, self.step)]
        self.position += len(piece)
        return piece


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 17])
def test_a_body_is_cut_into_whole_chunks_however_the_stream_delivers_it(size):
    data = os.urandom(size)
    pieces = list(Body(Trickle(data, 10_000).read, limit=10 * CHUNK_BYTES).pieces())
    assert b"".join(pieces) == data
    assert all(len(p) == CHUNK_BYTES for p in pieces[:-1]) and all(pieces)


def test_a_body_over_the_limit_is_refused_as_soon_as_the_stream_runs_over_and_not_read_further():
    stream = Trickle(b"x" * (5 * CHUNK_BYTES), CHUNK_BYTES)
    body = Body(stream.read, limit=CHUNK_BYTES + 10)
    with pytest.raises(Exception) as raised:
        list(body.pieces())
    assert raised.value.status == 413
    assert stream.position == CHUNK_BYTES + 11


def test_a_body_of_exactly_the_limit_is_taken():
    assert b"".join(Body(Trickle(b"y" * 1000, 7).read, limit=1000).pieces()) == b"y" * 1000


def test_a_body_is_read_once_so_a_retried_unit_of_work_asks_the_client_to_send_it_again():
    body = Body(Trickle(b"z", 1).read, limit=10)
    list(body.pieces())
    with pytest.raises(Exception) as raised:
        body.pieces()
    assert raised.value.status == 503
