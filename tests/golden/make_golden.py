"""Make the golden vault of a released schema (run once per schema release; the output is committed).

    HANDOVER_KDF=minimum python tests/golden/make_golden.py tests/golden/vault-0001.db

The vault holds one record of every kind, a rotated credential and an attachment, with the test-only
passphrase below. tests/test_migrations.py opens a copy with the current program, which must back it
up, upgrade it and decrypt every record.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

PASSPHRASE = "golden vault passphrase"
RECOVERY_FILE_SUFFIX = ".recovery"


def main(out: str) -> None:
    from handover_vault import init_vault

    v, code = init_vault(Path(out), PASSPHRASE)
    with v:
        v.clients.add(
            "acme", name="ACME Ltd", contract_start="2024-01-01", notice_months=1, end_of_month=True
        )
        v.contacts.add("acme", name="Jane Doe", email="jane@acme.example", authorized=True)
        v.docs.add("acme", title="Network overview", body="# LAN\n10.0.0.0/24", overview=True)
        v.docs.edit("acme", "Network overview", body="# LAN\n10.0.0.0/24\n\nfw1 at 10.0.0.1")
        v.assets.add("acme", hostname="fw1", kind="firewall", ip="10.0.0.1", expires="2027-03-01")
        v.creds.add(
            "acme", label="Firewall admin", username="admin", secret="golden-secret-1", category="firewall"
        )
        v.creds.rotate("acme", "Firewall admin", "golden-secret-2")
        v.issues.add("acme", title="Backups untested", severity="high", workaround="test monthly")
        with v.write("golden attachment") as s:
            client = v.clients.get("acme", s)
            v.attachments.add_stream(s, client, "diagram.txt", io.BytesIO(b"golden attachment\n" * 1000))
        v.store.checkpoint()
    Path(out + RECOVERY_FILE_SUFFIX).write_text(code + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
