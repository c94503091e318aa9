"""PHI envelopes bound to their row, blind indexes, and password hashing."""
from __future__ import annotations

import os
import uuid

import pytest

from clarity.errors import DecryptionError
from clarity.security.crypto import Keyring, normalize
from clarity.security.passwords import Passwords

PHI = {"first_name": "Zoë", "last_name": "Müller", "mrn": "MRN-0001", "date_of_birth": "1970-01-02",
       "address": {"city": "Zürich"}}


def make_keyring(data_keys=None, active="k1", blind=None) -> Keyring:
    return Keyring(data_keys or {"k1": os.urandom(32)}, active, blind or os.urandom(32))


@pytest.fixture
def keyring():
    return make_keyring()


def test_an_envelope_round_trips_to_the_same_fields(keyring):
    row_id = uuid.uuid4()

    envelope, key_id = keyring.encrypt("patients", "phi", row_id, PHI)

    assert key_id == "k1"
    assert keyring.decrypt("patients", "phi", row_id, envelope, key_id) == PHI


def test_an_envelope_does_not_contain_the_plaintext(keyring):
    envelope, _ = keyring.encrypt("patients", "phi", uuid.uuid4(), PHI)

    assert b"MRN-0001" not in envelope
    assert "Müller".encode() not in envelope


def test_the_same_fields_encrypt_differently_each_time(keyring):
    row_id = uuid.uuid4()

    first, _ = keyring.encrypt("patients", "phi", row_id, PHI)
    second, _ = keyring.encrypt("patients", "phi", row_id, PHI)

    assert first != second


def test_a_memoryview_from_the_driver_decrypts(keyring):
    row_id = uuid.uuid4()
    envelope, key_id = keyring.encrypt("patients", "phi", row_id, PHI)

    assert keyring.decrypt("patients", "phi", row_id, memoryview(envelope), key_id) == PHI


def test_an_envelope_opened_for_another_row_fails_with_a_clear_error_not_garbage(keyring):
    row_id, other_id = uuid.uuid4(), uuid.uuid4()
    envelope, key_id = keyring.encrypt("patients", "phi", row_id, PHI)

    with pytest.raises(DecryptionError) as raised:
        keyring.decrypt("patients", "phi", other_id, envelope, key_id)

    message = str(raised.value)
    assert "failed authentication" in message
    assert str(other_id) in message
    assert "Müller" not in message and "MRN-0001" not in message


def test_an_envelope_opened_for_another_column_or_table_fails(keyring):
    row_id = uuid.uuid4()
    envelope, key_id = keyring.encrypt("patients", "phi", row_id, PHI)

    with pytest.raises(DecryptionError):
        keyring.decrypt("patients", "notes", row_id, envelope, key_id)
    with pytest.raises(DecryptionError):
        keyring.decrypt("records", "phi", row_id, envelope, key_id)


@pytest.mark.parametrize("position", [0, 12, 20, -1], ids=["nonce", "first-ciphertext-byte", "ciphertext", "tag"])
def test_a_flipped_byte_anywhere_in_the_envelope_fails_authentication(keyring, position):
    row_id = uuid.uuid4()
    envelope, key_id = keyring.encrypt("patients", "phi", row_id, PHI)
    tampered = bytearray(envelope)
    tampered[position] ^= 0x01

    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt("patients", "phi", row_id, bytes(tampered), key_id)


def test_a_truncated_envelope_fails_authentication(keyring):
    row_id = uuid.uuid4()
    envelope, key_id = keyring.encrypt("patients", "phi", row_id, PHI)

    with pytest.raises(DecryptionError):
        keyring.decrypt("patients", "phi", row_id, envelope[:10], key_id)


def test_an_unknown_key_id_raises_decryption_error_naming_no_key(keyring):
    row_id = uuid.uuid4()
    envelope, _ = keyring.encrypt("patients", "phi", row_id, PHI)

    with pytest.raises(DecryptionError, match="unknown key id"):
        keyring.decrypt("patients", "phi", row_id, envelope, "retired")


def test_an_envelope_under_another_key_with_the_same_id_fails_authentication():
    row_id = uuid.uuid4()
    envelope, key_id = make_keyring().encrypt("patients", "phi", row_id, PHI)

    with pytest.raises(DecryptionError, match="failed authentication"):
        make_keyring().decrypt("patients", "phi", row_id, envelope, key_id)


def test_rows_under_an_old_key_still_decrypt_after_a_new_key_becomes_active():
    old_key, new_key, blind = os.urandom(32), os.urandom(32), os.urandom(32)
    before = Keyring({"2023": old_key}, "2023", blind)
    row_id = uuid.uuid4()
    old_envelope, old_kid = before.encrypt("patients", "phi", row_id, PHI)

    rotated = Keyring({"2023": old_key, "2024": new_key}, "2024", blind)
    new_envelope, new_kid = rotated.encrypt("patients", "phi", row_id, PHI)

    assert (old_kid, new_kid) == ("2023", "2024")
    assert rotated.decrypt("patients", "phi", row_id, old_envelope, old_kid) == PHI
    assert rotated.decrypt("patients", "phi", row_id, new_envelope, new_kid) == PHI
    with pytest.raises(DecryptionError):
        before.decrypt("patients", "phi", row_id, new_envelope, new_kid)


def test_a_keyring_refuses_an_active_key_it_does_not_hold():
    with pytest.raises(ValueError):
        Keyring({"k1": os.urandom(32)}, "k2", os.urandom(32))


def test_normalize_folds_case_accents_and_whitespace():
    assert normalize("  Müller \t Lüdenscheid ") == "muller ludenscheid"
    assert normalize("ÉMILE") == normalize("emile")


@pytest.mark.parametrize("variant", ["Müller", "MÜLLER", "muller", "  Muller ", "Mu\u0308ller"])
def test_the_blind_index_ignores_case_accents_and_surrounding_whitespace(keyring, variant):
    expected = keyring.blind_index("patients", "last_name", "muller")

    assert keyring.blind_index("patients", "last_name", variant) == expected


def test_the_blind_index_distinguishes_different_values(keyring):
    muller = keyring.blind_index("patients", "last_name", "Muller")

    assert keyring.blind_index("patients", "last_name", "Miller") != muller


def test_the_blind_index_is_a_32_byte_hmac_and_not_the_value(keyring):
    index = keyring.blind_index("patients", "mrn", "MRN-0001")

    assert isinstance(index, bytes) and len(index) == 32
    assert b"MRN-0001" not in index


def test_the_blind_index_of_none_is_none(keyring):
    assert keyring.blind_index("patients", "email", None) is None


def test_the_same_value_gets_a_different_blind_index_in_each_column(keyring):
    value = "ada@example.org"

    indexes = {
        keyring.blind_index("patients", "email", value),
        keyring.blind_index("patients", "last_name", value),
        keyring.blind_index("users", "email", value),
    }

    assert len(indexes) == 3


def test_the_blind_index_differs_under_a_different_root_key():
    data = {"k1": os.urandom(32)}
    one = Keyring(data, "k1", os.urandom(32))
    other = Keyring(data, "k1", os.urandom(32))

    assert one.blind_index("patients", "mrn", "MRN-0001") != other.blind_index("patients", "mrn", "MRN-0001")


def test_the_blind_index_is_stable_for_the_same_root_key():
    data, blind = {"k1": os.urandom(32)}, os.urandom(32)

    assert (Keyring(data, "k1", blind).blind_index("patients", "mrn", "MRN-0001")
            == Keyring(data, "k1", blind).blind_index("patients", "mrn", "MRN-0001"))


def test_the_blind_index_does_not_depend_on_the_data_keys():
    blind = os.urandom(32)
    one = Keyring({"k1": os.urandom(32)}, "k1", blind)
    rotated = Keyring({"k2": os.urandom(32)}, "k2", blind)

    assert one.blind_index("patients", "mrn", "MRN-0001") == rotated.blind_index("patients", "mrn", "MRN-0001")


@pytest.fixture(scope="module")
def passwords():
    return Passwords(time_cost=1, memory_kib=1024)


def test_a_hashed_password_verifies(passwords):
    hashed = passwords.hash("correct horse battery")

    assert hashed.startswith("$argon2id$")
    assert "correct horse battery" not in hashed
    assert passwords.verify(hashed, "correct horse battery") is True


def test_a_wrong_password_does_not_verify(passwords):
    hashed = passwords.hash("correct horse battery")

    assert passwords.verify(hashed, "correct horse batterz") is False


def test_an_unknown_account_without_a_hash_never_verifies(passwords):
    assert passwords.verify(None, "correct horse battery") is False
    assert passwords.verify(None, "decoy password, never valid") is False


def test_a_malformed_hash_does_not_verify(passwords):
    assert passwords.verify("not a hash", "correct horse battery") is False


def test_a_hash_with_weaker_parameters_needs_rehash(passwords):
    stronger = Passwords(time_cost=2, memory_kib=1024)

    assert stronger.needs_rehash(passwords.hash("correct horse battery")) is True
    assert passwords.needs_rehash(passwords.hash("correct horse battery")) is False


@pytest.mark.parametrize("envelope", [b"", b"\x00", bytes(12), bytes(20)])
def test_an_envelope_too_short_for_a_nonce_and_a_tag_is_a_decryption_error(keyring, envelope):
    with pytest.raises(DecryptionError):
        keyring.decrypt("patients", "phi", uuid.uuid4(), envelope, "k1")
