"""The termination letter: one H1, the vault's OpenSSH key for the successor, and a warning when
the notice date it states is already past."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from handover_vault import agreement as ag
from tests.conftest import run


def test_the_letter_has_one_h1_and_carries_the_vault_key(acme) -> None:
    from handover_vault.letter import compose

    ag.end_agreement(acme, "acme", "2026-11-26", "Retiring")
    _, markdown, html = compose(acme, "acme")
    assert html.count("<h1>") == 1 and "<h1>Ending our maintenance agreement</h1>" in html
    assert len(re.findall(r"^# ", markdown, re.M)) == 1
    for text in (markdown, html):
        assert acme.ssh_public_key in text and acme.ssh_fingerprint in text and acme.fingerprint in text
    assert acme.ssh_public_key.startswith("ssh-ed25519 AAAA") and acme.ssh_public_key.endswith(
        " handover-vault"
    )
    # A template without a heading of its own still gets one from the page.
    _, _, plain = compose(acme, "acme", template="Dear {{client_name}}, {{vault_ssh_key}}")
    assert plain.count("<h1>") == 1


def test_letter_warns_when_the_notice_date_is_before_today(acme, vault_path: Path, tmp_path: Path) -> None:
    from handover_vault.letter import notice_warning

    today = dt.date.today()
    past = (today - dt.timedelta(days=3)).isoformat()
    ag.end_agreement(acme, "acme", past, "Retiring")
    assert notice_warning(acme, "acme", today=today - dt.timedelta(days=3)) is None
    assert notice_warning(acme, "acme") == (
        f"the notice date {past} is before today ({today.isoformat()}): the letter states notice as "
        "given on that date; check it (handover end SLUG --notice-given DATE records another)"
    )
    acme.close()
    done = run(["letter", "acme", "--out", str(tmp_path / "out")], vault=vault_path)
    assert done.returncode == 0, done.stderr
    assert f"warning: the notice date {past} is before today" in done.stderr


def test_successor_show_and_export_print_the_key_line(acme, vault_path: Path) -> None:
    key, fp, hv = acme.ssh_public_key, acme.ssh_fingerprint, acme.fingerprint
    acme.close()
    shown = run(["successor", "show", "acme"], vault=vault_path)
    assert shown.returncode == 0, shown.stderr
    assert f"  Vault fingerprint: {hv}  {fp}\n  Vault signing key: {key}\n" in shown.stdout
