"""vault/keys/session.py and `handover unlock` / `lock`: the VMK kept for a while under a key only the shell holds."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import pytest

from handover_vault.errors import AuthenticationFailed, InvalidInput
from handover_vault.keys import session
from tests.conftest import PASSPHRASE, run
from tests.helpers_security import flip, fork_run, mode, session_token

TOKEN_RE = re.compile(r"^hvs1\.[0-9a-f]{32}\.[A-Za-z0-9_-]{43}$")
ENDED = "the session has ended (locked, expired or from another machine)"


def _file(token: str) -> Path:
    return session.runtime_dir() / token.split(".")[1]


def _no_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    from handover_vault.keys import crypto

    def never(*_a: object, **_kw: object) -> bytes:
        raise AssertionError("a session must not run the KDF")

    monkeypatch.setattr(crypto, "derive_kek", never)


def test_session_opens_the_vault_without_the_kdf(
    acme, vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handover_vault import open_vault

    token = acme.start_session(900)
    assert TOKEN_RE.match(token)
    ev = acme.audit.events()[-1]
    assert (ev.action, ev.detail) == ("vault.unlock", {"seconds": 900})
    _no_kdf(monkeypatch)
    with open_vault(vault_path, session_token=token) as v:
        assert v.creds.reveal("acme", "Firewall admin").data["secret"] == "Fw-s3cret-0001"


def test_session_file_is_private_and_holds_no_clear_key(acme) -> None:
    token = acme.start_session(900)
    path = _file(token)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    blob = path.read_bytes()
    key = base64.urlsafe_b64decode(token.split(".")[2] + "=")
    for needle in (
        acme.keys.vmk,
        base64.b64encode(acme.keys.vmk),
        key,
        token.encode(),
        str(acme.path).encode(),
        acme.vault_id.encode(),
    ):
        assert needle not in blob
    assert blob[0] == 1 and len(blob) > 29  # one sealed envelope


def test_lock_ends_the_session(acme, vault_path: Path) -> None:
    from handover_vault import open_vault

    token = acme.start_session(900)
    assert session.end(token) is True
    assert not _file(token).exists()
    assert session.end(token) is False
    with pytest.raises(AuthenticationFailed) as err:
        open_vault(vault_path, session_token=token)
    assert err.value.message == ENDED


def test_expired_session_is_refused_and_removed(
    acme, vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handover_vault import open_vault

    token = acme.start_session(60)
    with open_vault(vault_path, session_token=token):
        pass
    later = time.time() + 61
    monkeypatch.setattr(session.time, "time", lambda: later)
    with pytest.raises(AuthenticationFailed) as err:
        open_vault(vault_path, session_token=token)
    assert (err.value.message, err.value.hints) == (
        "the session has expired",
        ("unlock again with: eval $(handover unlock)",),
    )
    assert not _file(token).exists()


def test_session_of_another_vault_is_refused(acme, tmp_path: Path) -> None:
    from handover_vault import init_vault, open_vault

    other, _ = init_vault(tmp_path / "other.db", PASSPHRASE)
    other.close()
    token = acme.start_session(900)
    with pytest.raises(AuthenticationFailed) as err:
        open_vault(tmp_path / "other.db", session_token=token)
    assert (err.value.message, err.value.hints) == (
        "HANDOVER_SESSION belongs to another vault",
        ("unset HANDOVER_SESSION, or unlock this vault",),
    )


def _tweak_key(token: str) -> str:
    prefix, sid, key = token.split(".")
    middle = len(key) // 2
    swapped = "A" if key[middle] != "A" else "B"
    return f"{prefix}.{sid}.{key[:middle]}{swapped}{key[middle + 1 :]}"


def test_tampered_token_or_file_is_refused(acme, vault_path: Path) -> None:
    from handover_vault import open_vault

    token = acme.start_session(900)
    with pytest.raises(AuthenticationFailed, match=r"^HANDOVER_SESSION does not match its session file$"):
        open_vault(vault_path, session_token=_tweak_key(token))
    path = _file(token)
    original = path.read_bytes()
    for index in (0, 5, len(original) // 2, -1):
        path.write_bytes(flip(original, index))
        with pytest.raises(AuthenticationFailed, match=r"^HANDOVER_SESSION does not match its session file$"):
            open_vault(vault_path, session_token=token)
    path.write_bytes(original)
    with open_vault(vault_path, session_token=token):
        pass


def test_session_file_moved_to_another_session_id_is_refused(acme, vault_path: Path) -> None:
    from handover_vault import open_vault

    first, second = acme.start_session(900), acme.start_session(900)
    _file(first).replace(_file(second))  # first's file now sits under second's id
    prefix, _, key = first.split(".")
    with pytest.raises(AuthenticationFailed, match=r"^HANDOVER_SESSION does not match its session file$"):
        open_vault(vault_path, session_token=f"{prefix}.{second.split('.')[1]}.{key}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "hvs1",
        "hvs2.0123456789abcdef0123456789abcdef." + "A" * 43,
        "hvs1.../../etc/passwd." + "A" * 43,
        "hvs1.0123456789ABCDEF0123456789ABCDEF." + "A" * 43,
        "hvs1.0123456789abcdef0123456789abcdef." + "A" * 42,
    ],
    ids=["empty", "prefix-only", "other-version", "path-traversal", "uppercase-id", "short-key"],
)
def test_malformed_token_is_refused_before_any_file_is_read(token: str) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        session.load(token, "vault-id")
    assert (err.value.message, err.value.hints) == (
        "HANDOVER_SESSION is not a valid session",
        ("run: handover unlock",),
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("7d", 604800), ("45", 45), (" 5 m ", 300)],
)
def test_durations(text: str, seconds: int) -> None:
    assert session.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "8d", "604801", "15x", "-5m", "1.5h", "", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput):
        session.parse_duration(text)


# --- through the command ----------------------------------------------------------------------------


def test_unlock_then_lock_through_the_command(acme, vault_path: Path) -> None:
    unlocked = run(["unlock", "--for", "10m"], vault=vault_path)
    assert unlocked.returncode == 0, unlocked.stderr
    token = session_token(unlocked.stdout)
    assert unlocked.stdout == f"export HANDOVER_SESSION={token}\n"
    assert unlocked.stderr == f"# unlocked {vault_path} for 10m; end it early with: handover lock\n"
    assert mode(_file(token)) == 0o600

    # No passphrase source at all: the session alone opens the vault.
    listed = run(
        ["cred", "list", "acme", "--json"], vault=vault_path, passphrase=None, env={"HANDOVER_SESSION": token}
    )
    assert listed.returncode == 0, listed.stderr
    assert "Firewall admin" in listed.stdout

    locked = run(["lock"], vault=vault_path, passphrase=None, env={"HANDOVER_SESSION": token})
    assert (locked.returncode, locked.stdout) == (0, "Locked.\n")
    assert locked.stderr == (
        "unset HANDOVER_SESSION\nnote: after a leaked session file or passphrase, run `handover rekey` (new "
        "master key, every record re-encrypted): this alone does not end that exposure.\n"
    )
    assert not _file(token).exists()

    # A locked session is a clear error (exit 3), never a silent fallback to a prompt or passphrase.
    after = run(["cred", "list", "acme"], vault=vault_path, env={"HANDOVER_SESSION": token})
    assert (after.returncode, after.stdout, after.stderr) == (
        3,
        "",
        f"Error: {ENDED}\nhint: unlock again with: eval $(handover unlock)\n",
    )


def test_expired_session_through_the_command(acme, vault_path: Path) -> None:
    unlocked = fork_run(["unlock", "--for", "1s"], vault=vault_path)
    token = session_token(unlocked.stdout)
    time.sleep(1.2)
    done = fork_run(["client", "list"], vault=vault_path, passphrase=None, env={"HANDOVER_SESSION": token})
    assert (done.returncode, done.stderr) == (
        3,
        "Error: the session has expired\nhint: unlock again with: eval $(handover unlock)\n",
    )


def test_foreign_session_through_the_command(acme, vault_path: Path, tmp_path: Path) -> None:
    from handover_vault import init_vault

    other, _ = init_vault(tmp_path / "other.db", PASSPHRASE)
    token = other.start_session(600)
    other.close()
    done = fork_run(["client", "list"], vault=vault_path, passphrase=None, env={"HANDOVER_SESSION": token})
    assert (done.returncode, done.stderr) == (
        3,
        "Error: HANDOVER_SESSION belongs to another vault\nhint: unset HANDOVER_SESSION, or unlock this vault\n",
    )


def test_lock_without_a_session_and_bad_durations_through_the_command(acme, vault_path: Path) -> None:
    done = fork_run(["lock"], vault=vault_path, passphrase=None)
    assert (done.returncode, done.stdout) == (0, "No session to lock (HANDOVER_SESSION is not set).\n")
    bad = fork_run(["unlock", "--for", "8d"], vault=vault_path)
    assert bad.returncode == 2
    assert bad.stderr.endswith(
        "Error: Invalid value for '--for': a session lasts between 1 second and 7 days; "
        "write a duration as e.g. 90s, 15m, 2h or 1d (at most 7 days)\n"
    )
    assert not any(session.runtime_dir().iterdir())  # nothing was written
    assert os.environ.get("HANDOVER_SESSION") is None
