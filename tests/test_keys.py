"""vault/keys/hierarchy.py: key slots, the recovery code, passphrase changes and what the slot AAD binds."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from handover_vault.errors import AuthenticationFailed, IntegrityError, InvalidInput
from handover_vault.keys import hierarchy as keys
from tests.conftest import PASSPHRASE, run
from tests.helpers_security import flip, fork_run, one, sql

WRONG = "Error: wrong passphrase\nhint: check the passphrase source (prompt, file or command)\n"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){6}$")


def _slots(path: Path) -> list[tuple]:
    return sql(
        path, "SELECT id, kind, salt, memory_kib, iterations, lanes, wrapped FROM key_slots ORDER BY kind"
    )


# --- the recovery code ------------------------------------------------------------------------------


def test_recovery_code_format_and_strength() -> None:
    assert len(CROCKFORD) == 32 == len(set(CROCKFORD)) == len(keys.RECOVERY_ALPHABET)
    assert set(keys.RECOVERY_ALPHABET) == set(CROCKFORD)
    assert keys.RECOVERY_SYMBOLS * 5 >= 128  # each symbol carries log2(32) = 5 bits
    codes = [keys.new_recovery_code() for _ in range(300)]
    assert all(CODE_RE.match(c) for c in codes), codes[:3]
    assert len(set(codes)) == len(codes)
    # Every symbol of the alphabet shows up: the codes are not drawn from a smaller set.
    assert set("".join(codes).replace("-", "")) == set(CROCKFORD)


def test_init_code_is_the_documented_shape(new_vault: tuple) -> None:
    _, code = new_vault
    assert CODE_RE.match(code)
    assert len(code.replace("-", "")) * 5 >= 128


@pytest.mark.parametrize(
    "typed",
    [
        lambda c: c.lower(),
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", " "),
        lambda c: f"  {c.lower().replace('-', '')}  ",
        lambda c: c.replace("0", "O").replace("1", "I"),
        lambda c: c.replace("1", "l").lower(),
    ],
    ids=["lowercase", "no-dashes", "spaces", "padded", "O-and-I-for-0-and-1", "l-for-1"],
)
def test_recovery_code_normalisation(typed) -> None:
    code = "0123-4567-89AB-CDEF-GHJK-MNPQ-1STV"
    assert keys.normalise_recovery_code(typed(code)) == b"0123456789ABCDEFGHJKMNPQ1STV"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0123-4567",
        "0123-4567-89AB-CDEF-GHJK-MNPQ-RSTV-WXYZ",
        "0123-4567-89AB-CDEF-GHJK-MNPQ-RSTU",
        "0123-4567-89AB-CDEF-GHJK-MNPQ-RST!",
        "0123_4567_89AB_CDEF_GHJK_MNPQ_RSTV",
    ],
    ids=["empty", "short", "long", "U-not-in-alphabet", "punctuation", "underscores"],
)
def test_malformed_recovery_code_is_the_same_failure_as_a_wrong_one(bad: str) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        keys.normalise_recovery_code(bad)
    assert err.value.message == "the recovery code is not valid"


def test_recovery_code_typed_sloppily_recovers_the_vault(new_vault: tuple, vault_path: Path) -> None:
    from handover_vault import open_vault, recover_vault

    v, code = new_vault
    v.clients.add("acme", name="ACME Ltd")
    records_before = sql(vault_path, "SELECT id, envelope FROM clients")
    recovery_before = sql(vault_path, "SELECT id, wrapped FROM key_slots WHERE kind = 'recovery'")
    v.close()
    with recover_vault(vault_path, f" {code.lower().replace('-', ' ')} ", "a brand new passphrase") as r:
        assert r.clients.get("acme").name == "ACME Ltd"
        assert [e.action for e in r.audit.events()][-1] == "vault.recover"
    with pytest.raises(AuthenticationFailed, match=r"^wrong passphrase$"):
        open_vault(vault_path, passphrase=PASSPHRASE)
    with open_vault(vault_path, passphrase="a brand new passphrase") as again:
        assert again.clients.get("acme").name == "ACME Ltd"
    # Only the passphrase slot changed: no record re-encrypted, the recovery slot kept.
    assert sql(vault_path, "SELECT id, envelope FROM clients") == records_before
    assert sql(vault_path, "SELECT id, wrapped FROM key_slots WHERE kind = 'recovery'") == recovery_before
    with recover_vault(vault_path, code, "third passphrase"):
        pass


def test_wrong_recovery_code_is_refused(new_vault: tuple, vault_path: Path) -> None:
    from handover_vault import recover_vault

    new_vault[0].close()
    before = _slots(vault_path)
    with pytest.raises(AuthenticationFailed) as err:
        recover_vault(vault_path, keys.new_recovery_code(), "new passphrase")
    assert err.value.message == "the recovery code is not valid"
    assert _slots(vault_path) == before


def test_the_passphrase_does_not_open_the_recovery_slot(new_vault: tuple, vault_path: Path) -> None:
    from handover_vault.core import _unlock_with

    v, code = new_vault
    with pytest.raises(AuthenticationFailed):
        _unlock_with(v.store, v.vault_id, "recovery", keys.normalise_passphrase(PASSPHRASE))
    with pytest.raises(AuthenticationFailed, match=r"^wrong passphrase$"):
        _unlock_with(v.store, v.vault_id, "passphrase", keys.normalise_recovery_code(code))


def test_new_recovery_code_replaces_the_old_one(new_vault: tuple, vault_path: Path) -> None:
    from handover_vault import recover_vault

    v, old = new_vault
    new = v.new_recovery_code()
    assert new != old and CODE_RE.match(new)
    assert one(vault_path, "SELECT count(*) FROM key_slots WHERE kind = 'recovery'") == 1
    v.close()
    with pytest.raises(AuthenticationFailed, match="recovery code is not valid"):
        recover_vault(vault_path, old, "x passphrase")
    with recover_vault(vault_path, new, "x passphrase"):
        pass


# --- slots ------------------------------------------------------------------------------------------


def test_init_makes_one_passphrase_slot_and_one_recovery_slot(new_vault: tuple, vault_path: Path) -> None:
    slots = _slots(vault_path)
    assert [s[1] for s in slots] == ["passphrase", "recovery"]
    salts = [s[2] for s in slots]
    assert all(len(salt) == keys.SALT_SIZE == 16 for salt in salts) and salts[0] != salts[1]
    # version + 96-bit nonce + the 256-bit VMK + 128-bit tag
    assert all(len(s[6]) == 1 + 12 + 32 + 16 and s[6][0] == 1 for s in slots)
    assert all(s[3:6] == (19456, 2, 1) for s in slots)  # HANDOVER_KDF=minimum: the floor, never lower


def test_passphrase_change_rewraps_only(acme, vault_path: Path) -> None:
    from handover_vault import open_vault

    tables = ("clients", "records", "record_versions", "chunks")
    before = {t: sql(vault_path, f"SELECT * FROM {t}") for t in tables}
    recovery = sql(vault_path, "SELECT * FROM key_slots WHERE kind = 'recovery'")
    old_slot = one(vault_path, "SELECT id FROM key_slots WHERE kind = 'passphrase'")
    acme.set_passphrase("new passphrase")
    assert {t: sql(vault_path, f"SELECT * FROM {t}") for t in tables} == before
    assert sql(vault_path, "SELECT * FROM key_slots WHERE kind = 'recovery'") == recovery
    new_slot = one(vault_path, "SELECT id FROM key_slots WHERE kind = 'passphrase'")
    assert new_slot != old_slot
    event = acme.audit.events()[-1]
    assert (event.action, event.detail) == ("vault.passwd", {"slot": new_slot})
    acme.close()
    with pytest.raises(AuthenticationFailed):
        open_vault(vault_path, passphrase=PASSPHRASE)
    with open_vault(vault_path, passphrase="new passphrase") as v:
        assert v.creds.reveal("acme", "Firewall admin").data["secret"] == "Fw-s3cret-0001"


def test_passphrase_is_nfc_normalised(vault_path: Path) -> None:
    from handover_vault import init_vault, open_vault

    composed = unicodedata.normalize("NFC", "Café Müller ñandú")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    v, _ = init_vault(vault_path, composed)
    v.close()
    with open_vault(vault_path, passphrase=decomposed):
        pass


def test_empty_passphrase_is_refused(vault_path: Path, new_vault: tuple) -> None:
    from handover_vault import init_vault

    with pytest.raises(InvalidInput, match=r"^the passphrase is empty$"):
        init_vault(vault_path.with_name("other.db"), "")
    with pytest.raises(InvalidInput, match=r"^the passphrase is empty$"):
        new_vault[0].set_passphrase("")


# --- what the slot's associated data binds ----------------------------------------------------------

SLOT_EDITS = {
    "memory+1": "UPDATE key_slots SET memory_kib = memory_kib + 1 WHERE kind = 'passphrase'",
    "memory-doubled": "UPDATE key_slots SET memory_kib = memory_kib * 2 WHERE kind = 'passphrase'",
    "iterations": "UPDATE key_slots SET iterations = iterations + 1 WHERE kind = 'passphrase'",
    "lanes": "UPDATE key_slots SET lanes = 2 WHERE kind = 'passphrase'",
    "slot-id": "UPDATE key_slots SET id = '00000000-0000-4000-8000-000000000000' WHERE kind = 'passphrase'",
    "kind-swapped": "UPDATE key_slots SET kind = CASE kind WHEN 'passphrase' THEN 'recovery' ELSE 'passphrase' END",
    "salt-flipped": None,
    "wrapped-flipped": None,
    "wrapped-as-text": "UPDATE key_slots SET wrapped = 'not a blob' WHERE kind = 'passphrase'",
}


def _edit_slot(path: Path, edit: str) -> None:
    if edit == "salt-flipped":
        salt = one(path, "SELECT salt FROM key_slots WHERE kind = 'passphrase'")
        sql(path, "UPDATE key_slots SET salt = ? WHERE kind = 'passphrase'", (flip(salt, 5),))
    elif edit == "wrapped-flipped":
        wrapped = one(path, "SELECT wrapped FROM key_slots WHERE kind = 'passphrase'")
        sql(path, "UPDATE key_slots SET wrapped = ? WHERE kind = 'passphrase'", (flip(wrapped, 20),))
    else:
        sql(path, SLOT_EDITS[edit])


@pytest.mark.parametrize("edit", list(SLOT_EDITS))
def test_edited_slot_is_a_wrong_passphrase_not_a_crash(edit: str, new_vault: tuple, vault_path: Path) -> None:
    """Lowering the KDF cost (or any slot field) in the file makes the unwrap fail: exit 3."""
    from handover_vault import open_vault

    new_vault[0].close()
    _edit_slot(vault_path, edit)
    with pytest.raises(AuthenticationFailed) as err:
        open_vault(vault_path, passphrase=PASSPHRASE)
    assert err.value.message == "wrong passphrase"
    if edit in ("memory+1", "kind-swapped"):  # and through the command
        done = (run if edit == "memory+1" else fork_run)(["client", "list"], vault=vault_path)
        assert (done.returncode, done.stdout, done.stderr) == (3, "", WRONG)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "UPDATE key_slots SET salt = x'0102'",
            "a key slot's stored salt is malformed; refusing to run the KDF",
        ),
        (
            "UPDATE key_slots SET salt = 'sixteen chars!!!'",
            "a key slot's stored salt is malformed; refusing to run the KDF",
        ),
        (
            "UPDATE key_slots SET memory_kib = 'lots'",
            "the key slot's stored KDF parameters are out of bounds; refusing to run the KDF",
        ),
        (
            "UPDATE key_slots SET iterations = 1000000",
            "the key slot's stored KDF parameters are out of bounds; refusing to run the KDF",
        ),
    ],
    ids=["short-salt", "text-salt", "text-memory", "huge-iterations"],
)
def test_malformed_slot_is_refused_as_corrupt(
    statement: str, message: str, new_vault: tuple, vault_path: Path
) -> None:
    from handover_vault import open_vault

    new_vault[0].close()
    sql(vault_path, statement)
    with pytest.raises(IntegrityError) as err:
        open_vault(vault_path, passphrase=PASSPHRASE)
    assert (err.value.message, err.value.hints) == (message, ("the vault file may be corrupt or hostile",))
    if "x'0102'" in statement:
        done = run(["client", "list"], vault=vault_path)
        assert (done.returncode, done.stderr) == (
            4,
            f"Error: {message}\nhint: the vault file may be corrupt or hostile\n",
        )


def test_slot_copied_from_another_vault_does_not_open(tmp_path: Path) -> None:
    """Same passphrase, same schema: vault B with vault A's slot must not unlock (vault id in the AAD)."""
    from handover_vault import init_vault, open_vault

    a_path, b_path = tmp_path / "a.db", tmp_path / "b.db"
    for p in (a_path, b_path):
        v, _ = init_vault(p, PASSPHRASE)
        v.close()
    a_slot = sql(
        a_path,
        "SELECT id, salt, memory_kib, iterations, lanes, wrapped FROM key_slots WHERE kind = 'passphrase'",
    )[0]
    sql(b_path, "DELETE FROM key_slots WHERE kind = 'passphrase'")
    sql(
        b_path,
        "INSERT INTO key_slots (id, kind, salt, memory_kib, iterations, lanes, wrapped, created_at) "
        "VALUES (?, 'passphrase', ?, ?, ?, ?, ?, '2026-01-01T00:00:00Z')",
        a_slot,
    )
    with pytest.raises(AuthenticationFailed, match=r"^wrong passphrase$"):
        open_vault(b_path, passphrase=PASSPHRASE)


def test_no_passphrase_slot_at_all_is_a_wrong_passphrase(new_vault: tuple, vault_path: Path) -> None:
    new_vault[0].close()
    sql(vault_path, "DELETE FROM key_slots WHERE kind = 'passphrase'")
    done = fork_run(["client", "list"], vault=vault_path)
    assert (done.returncode, done.stderr) == (3, WRONG)


# --- keys derived from the VMK ----------------------------------------------------------------------


def test_lookups_are_keyed_per_vault(tmp_path: Path) -> None:
    """The slug and title lookups are HMACs under vault keys: equal names in two vaults do not match."""
    from handover_vault import init_vault

    lookups = []
    for name in ("a.db", "b.db"):
        v, _ = init_vault(tmp_path / name, PASSPHRASE)
        with v:
            c = v.clients.add("acme", name="ACME Ltd")
            assert v.keys.client_lookup("acme") == v.keys.client_lookup("acme")
            lookups.append((v.keys.client_lookup("acme"), c.keys.record_lookup("doc", "Network overview")))
    assert lookups[0][0] != lookups[1][0] and lookups[0][1] != lookups[1][1]
    assert b"acme".hex() not in lookups[0][0]


def test_record_lookup_ignores_case_and_unicode_form(acme) -> None:
    keys_ = acme.clients.get("acme").keys
    assert keys_.record_lookup("doc", "Café") == keys_.record_lookup(
        "doc", unicodedata.normalize("NFD", "café ")
    )
    assert keys_.record_lookup("doc", "Café") != keys_.record_lookup("cred", "Café")


def test_tampered_signing_key_is_an_integrity_error(v, vault_path: Path) -> None:
    from handover_vault import open_vault

    v.close()
    wrapped = one(vault_path, "SELECT value FROM meta WHERE key = 'signing_private'")
    sql(vault_path, "UPDATE meta SET value = ? WHERE key = 'signing_private'", (flip(wrapped, -3),))
    v = open_vault(vault_path, passphrase=PASSPHRASE)
    with (
        v,
        pytest.raises(
            IntegrityError, match=r"^the vault's signing key does not decrypt: tampered or corrupt$"
        ),
    ):
        v.sign(b"manifest")


def test_client_key_is_bound_to_its_client(acme) -> None:
    client = acme.clients.get("acme")
    wrapped = acme.keys.wrap_client_key(client.id, client.keys.key)
    acme.keys.forget_client("other-id")
    with pytest.raises(IntegrityError) as err:
        acme.keys.client("other-id", wrapped)
    assert err.value.message == "the data key of client other-id does not decrypt: tampered or corrupt"
    assert err.value.hints == ("the other clients are unaffected; restore this client from a backup",)
