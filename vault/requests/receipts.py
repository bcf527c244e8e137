"""Signed receipts of a logged request: what the ex-client can hold against a later rewrite.

``request log ... --receipt FILE`` writes one for the requester. It is Markdown in the same signed
form as the certificate of destruction (vault/forget.py; docs/spec.md gives both): a readable part,
a JSON facts block, then a ``handover-signature`` block whose Ed25519 signature, by the vault's
signing key, covers ``b"handover-receipt/1\\n"`` followed by everything before the block.

A receipt names the vault (its ``hv:`` fingerprint), the request, its time, requester, channel,
identity check, decision and the items asked for (labels, kinds, versions and ids; never a
secret), and the audit head after the request's entries: the sequence number and MAC of the newest
entry the request wrote. ``handover certificate verify`` checks it; ``handover audit verify
--checkpoint FILE`` takes it as a checkpoint, so a log cut back behind the receipt's entry, or
rewritten up to it, is caught (exit 4). Ex-client requests come after the last export, so no
bundle's checkpoint covers them: a receipt is what does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError, InvalidInput
from ..forget import checking_section, sign_certificate, verify_certificate
from ..signing_keys import signer_key

if TYPE_CHECKING:
    from ..core import Vault
    from ..integrity.audit import Head
    from .service import Logged

RECEIPT_FORMAT = "handover-receipt/1"
MAX_RECEIPT = 1_000_000


def facts(v: Vault, done: Logged) -> dict[str, Any]:
    """The receipt's facts (what ``certificate verify`` reads back): no secret is among them."""
    from .service import digest

    d = done.request.data
    contact = d.get("contact")
    return {
        "format": RECEIPT_FORMAT,
        "vault_fingerprint": v.fingerprint,
        "client": {"slug": done.client.slug, "name": done.client.name},
        "request": done.request.id,
        "request_sha256": digest(d),
        "logged_at": d["logged_at"],
        "requester": d["requester"],
        "contact": None
        if not contact
        else {"name": contact.get("name"), "authorized": bool(contact.get("authorized"))},
        "channel": d["channel"],
        "identity_check": d["verified_by"],
        "decision": d["decision"],
        "override": d.get("override"),
        "items": [
            {"kind": i["kind"], "id": i["id"], "version": i["version"], "label": i["label"]}
            for i in d.get("items") or []
        ],
        "audit": {"seq": done.head_seq, "mac": done.head_mac.hex()},
        "issued_by": _issuer(v),
    }


def _issuer(v: Vault) -> dict[str, str | None] | None:
    """Who issues the receipt: the technician profile's fields (None while the vault has none)."""
    profile = v.profile.get()
    return profile.values() if profile.is_set else None


def body(v: Vault, done: Logged) -> str:
    """The receipt's Markdown, unsigned. User text is escaped (``requests.md``), facts are JSON."""
    from ..profile import Profile, technician_md
    from .service import KIND_NAMES, md

    f = facts(v, done)
    who = md(f["requester"])
    if f["contact"]:
        status = "authorised contact" if f["contact"]["authorized"] else "contact, not authorised"
        who = f"{md(f['contact']['name'])} ({status})"
    items = "; ".join(
        f"{md(i['label'])} ({KIND_NAMES.get(i['kind'], i['kind'])} v{i['version']})" for i in f["items"]
    )
    check = "not checked" if f["identity_check"] == "none" else md(f["identity_check"])
    lines = [
        "# Receipt for a request",
        "",
        f"- **Vault:** `{f['vault_fingerprint']}` (the key that signs this receipt)",
        f"- **Client:** {md(f['client']['name'])} (`{md(f['client']['slug'])}`)",
        f"- **Request:** `{f['request']}`, logged {md(f['logged_at'])} (UTC)",
        f"- **Requester:** {who}",
        f"- **Channel:** {md(f['channel'])}",
        f"- **Identity check:** {check}",
        f"- **Asked for:** {items or '—'}",
        f"- **Decision:** {md(f['decision'])}",
    ]
    if f["override"]:
        lines.append(f"- **Policy override:** {md(f['override'])}")
    lines += [
        f"- **Audit log:** entry {f['audit']['seq']}, MAC `{f['audit']['mac']}`",
        "",
        "## Issued by",
        "",
        technician_md(Profile(**(f["issued_by"] or {}))),
        "This receipt records that the request above was logged in the technician's tamper-evident "
        "audit log, and what was decided. It holds no password, key or other secret: a disclosure "
        "names the item and its version only.",
        "",
        "Keep it. The audit entry it names can be checked against the vault at any later time: "
        "`handover audit verify --checkpoint FILE` fails when the log no longer holds this entry "
        "with this MAC (entries removed or history rewritten).",
        "",
        *checking_section("receipt", RECEIPT_FORMAT, f["vault_fingerprint"], f),
    ]
    return "\n".join(lines)


def receipt(v: Vault, done: Logged) -> str:
    """The signed receipt of a request just logged (``Requests.log``'s result)."""
    if not done.head_seq or not done.head_mac:
        raise InvalidInput("the request has no audit head to put in a receipt")
    # The key as it is now, after the request's commit: one read before it could be a key another
    # admin replaced meanwhile (handover new-signing-key), whose signature the head would outdate.
    v.forget_meta()
    return sign_certificate(v, body(v, done), RECEIPT_FORMAT)


def check_receipt(v: Vault, data: bytes | str) -> Head:
    """The audit head a receipt of *this* vault pins, after checking its signature.

    Raises InvalidInput (not a receipt) or IntegrityError (bad signature, another vault's key, a
    malformed head).
    """
    from ..integrity.audit import MAC_SIZE, Head

    checked = verify_certificate(data)
    f = checked.facts
    if f.get("format") != RECEIPT_FORMAT:
        raise InvalidInput("the file is a certificate of destruction, not a receipt or checkpoint")
    audit = f.get("audit") or {}
    try:
        seq, mac = audit["seq"], bytes.fromhex(audit["mac"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("the receipt's audit head is malformed") from None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or len(mac) != MAC_SIZE:
        raise IntegrityError("the receipt's audit head is malformed")
    # The vault's key, or an earlier one of its keys for a head before that key was replaced.
    if signer_key(v, checked.signer, seq, "receipt") is None:
        raise IntegrityError(f"the receipt was signed by {checked.signer}, not by this vault")
    return Head(seq, mac)


def is_signed_document(data: bytes) -> bool:
    """Whether a file looks like a signed receipt or certificate (rather than a JSON checkpoint)."""
    return b"\n```handover-signature\n" in data.replace(b"\r\n", b"\n")
