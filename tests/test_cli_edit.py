"""Editing and removing contacts, assets and issues through the installed command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run


def test_contact_authorisation_can_be_granted_and_withdrawn(acme, vault_path: Path) -> None:
    acme.contacts.add("acme", name="Bob Smith", email="bob@acme.example")
    acme.close()
    assert run(["contact", "edit", "acme", "bob smith", "--authorized"], vault=vault_path).returncode == 0
    contacts = json.loads(run(["contact", "list", "acme", "--json"], vault=vault_path).stdout)
    assert {c["name"]: c["authorized"] for c in contacts}["Bob Smith"] is True
    done = run(["contact", "edit", "acme", "Bob Smith", "--not-authorized"], vault=vault_path)
    assert "not authorised" in done.stdout
    assert run(["contact", "rm", "acme", "Bob Smith"], vault=vault_path).returncode == 1  # no TTY, no --yes
    assert run(["contact", "rm", "acme", "Bob Smith", "--yes"], vault=vault_path).returncode == 0
    names = [
        c["name"] for c in json.loads(run(["contact", "list", "acme", "--json"], vault=vault_path).stdout)
    ]
    assert names == ["Jane Doe"]


def test_asset_show_edit_rm(acme, vault_path: Path) -> None:
    acme.close()
    assert run(["asset", "edit", "acme", "fw1", "--serial", "FGT-123"], vault=vault_path).returncode == 0
    shown = json.loads(run(["asset", "show", "acme", "fw1", "--json"], vault=vault_path).stdout)
    assert shown["serial"] == "FGT-123" and shown["ip"] == "10.0.0.1" and shown["version"] == 2
    assert run(["asset", "rm", "acme", "fw1", "--yes"], vault=vault_path).returncode == 0
    missing = run(["asset", "show", "acme", "fw1"], vault=vault_path)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no asset 'fw1' for client acme")


def test_editing_an_issue_withdraws_its_acknowledgement(acme, vault_path: Path) -> None:
    from handover_vault.agreement import ack_state, record_ack

    record_ack(acme, "acme", by="Jane Doe", method="email")
    acme.close()
    done = run(["issue", "edit", "acme", "Backups untested", "--severity", "critical"], vault=vault_path)
    assert done.returncode == 0, done.stderr
    from handover_vault import open_vault
    from tests.conftest import PASSPHRASE

    with open_vault(vault_path, passphrase=PASSPHRASE) as v:
        (state,) = ack_state(v, v.clients.get("acme"))
    assert state["severity"] == "critical" and state["acknowledged"] is False


def test_attach_get_is_audited_before_anything_is_written(acme, vault_path: Path, tmp_path: Path) -> None:
    import sqlite3

    src = tmp_path / "router.cfg"
    src.write_bytes(b"enable secret 5 $1$abc$xyz\n")
    acme.attachments.add_file("acme", src)
    acme.close()
    out = tmp_path / "got.cfg"
    assert run(["attach", "get", "acme", "router.cfg", "--out", str(out)], vault=vault_path).returncode == 0
    events = json.loads(run(["audit", "list", "--json"], vault=vault_path).stdout)
    assert [e["detail"]["file"] for e in events if e["action"] == "attachment.get"] == ["got.cfg"]
    con = sqlite3.connect(vault_path)
    con.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'refused'); END")
    con.commit()
    con.close()
    refused = run(
        ["attach", "get", "acme", "router.cfg", "--out", str(tmp_path / "again.cfg")], vault=vault_path
    )
    assert refused.returncode == 1
    assert not (tmp_path / "again.cfg").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".again")] == []


def test_search_limit_stops_early_and_says_so(acme, vault_path: Path) -> None:
    for n in range(7):
        acme.docs.add("acme", title=f"Switch {n}", body="zanzibar uplink")
    acme.close()
    some = run(["search", "zanzibar", "--limit", "3", "--json"], vault=vault_path)
    assert some.returncode == 0, some.stderr
    assert len(json.loads(some.stdout)) == 3
    assert "more than 3 matches" in some.stderr
    every = run(["search", "zanzibar", "--limit", "0", "--json"], vault=vault_path)
    assert len(json.loads(every.stdout)) == 7 and every.stderr == ""
