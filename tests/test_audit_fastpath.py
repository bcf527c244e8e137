"""The audit verifier's fast paths give exactly what the reference functions give.

``audit verify`` encodes entries with a memoising encoder and checks rows with a fast path for rows
as the writer leaves them; both must agree with ``entry_bytes`` and the detailed checks.
"""

from __future__ import annotations

import pytest

from handover_vault.errors import IntegrityError
from handover_vault.integrity.audit import Row, _check_row_slowly, _entry_encoder, check_row, entry_bytes

VAULT_ID = "6f1c2f5e-4a8b-4c1d-9e0f-123456789abc"
CLIENT = "0b9a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
RECORD = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


def _rows() -> list[Row]:
    out = []
    for seq in range(1, 40):
        out.append(
            Row(
                seq,
                f"2026-11-26T03:29:{seq % 3:02d}Z",
                ("cred.reveal", "vault.unlock", "client.add")[seq % 3],
                None if seq % 4 == 0 else CLIENT,
                None if seq % 5 == 0 else (RECORD if seq % 2 else CLIENT),
                "vault" if seq % 4 == 0 else "client",
                bytes([seq]) * (seq % 7 + 29),
                bytes([seq]) * 32,
            )
        )
    return out


def test_encoder_matches_entry_bytes_for_every_row() -> None:
    encode = _entry_encoder(VAULT_ID)
    for row in _rows() * 2:  # the second pass hits the memoised fields
        assert encode(row) == entry_bytes(VAULT_ID, row)


def test_fast_and_detailed_row_checks_agree_on_intact_rows() -> None:
    for row in _rows():
        assert check_row(tuple(row)) == _check_row_slowly(row) == row


class _Raw(tuple):  # a result row: tuple unpacking and attribute access, as SQLAlchemy's Row
    def __getattr__(self, name: str):
        return self[Row._fields.index(name)]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("mac", "ab" * 32, "its mac column was altered"),
        ("detail", "text", "its detail column was altered"),
        ("seq", "7", "sequence number is not an integer"),
        ("scope", "other", "a column holds a value the vault never writes"),
        ("at", "yesterday", "a column holds a value the vault never writes"),
        ("client_id", "", "its client_id column was altered"),
        ("action", 5, "its action column was altered"),
    ],
)
def test_an_altered_column_leaves_the_fast_path_and_is_named(column: str, value, message: str) -> None:
    row = _rows()[0]._replace(**{column: value})
    with pytest.raises(IntegrityError, match=message):
        check_row(_Raw(row))


def test_a_memoryview_blob_is_accepted_through_the_detailed_path() -> None:
    row = _rows()[0]
    raw = _Raw(row._replace(detail=memoryview(row.detail), mac=bytearray(row.mac)))
    assert check_row(raw) == row


@pytest.mark.parametrize("column", ["action", "at", "client_id"])
def test_text_that_is_not_utf8_is_a_broken_entry_not_a_crash(acme, v, vault_path, column: str) -> None:
    import sqlite3

    seq = v.audit.verify().seq - 1  # an entry before the newest
    con = sqlite3.connect(vault_path)
    (value,) = con.execute(f"SELECT {column} FROM audit WHERE seq = ?", (seq,)).fetchone()
    con.execute(
        f"UPDATE audit SET {column} = CAST(? AS TEXT) WHERE seq = ?",
        ((value or "x").encode() + b"\xff", seq),
    )
    con.commit()
    con.close()
    with pytest.raises(IntegrityError, match=f"audit log broken at entry {seq}"):
        v.audit.verify()


def test_a_plain_tuple_with_an_altered_column_is_named_too() -> None:
    # audit verify reads plain tuples straight from the driver's cursor (store.scan).
    row = _rows()[0]._replace(mac="ab" * 32)
    with pytest.raises(IntegrityError, match="its mac column was altered"):
        check_row(tuple(row))
