"""Handover readiness: what a successor would miss (DESIGN §6, ``handover check``).

Blocking gaps stop an export unless forced; warnings are shown but do not block.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clients import ClientRef
    from .core import Vault
    from .profile import Profile
    from .store.records import Rec

# Categories a successor cannot work without. Registrar and DNS count as one need: either will do.
ESSENTIAL = (
    (("registrar", "dns"), "registrar or DNS"),
    (("tenant-admin",), "tenant admin"),
    (("backup-key",), "backup encryption key"),
    (("mfa-recovery",), "MFA recovery"),
    (("firewall",), "firewall"),
)
# The gaps about the technician profile (who signs the documents), shown by letter, export and forget.
PROFILE_CODES = ("no-profile", "profile-incomplete")
STALE_DAYS = 365
EXPIRY_WARN_DAYS = 60


@dataclass(frozen=True)
class Gap:
    level: str  # "blocking" | "warning"
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}


@dataclass
class Readiness:
    client: str
    gaps: list[Gap]
    due_to_forget: str | None = None

    @property
    def blocking(self) -> list[Gap]:
        return [g for g in self.gaps if g.level == "blocking"]

    @property
    def warnings(self) -> list[Gap]:
        return [g for g in self.gaps if g.level == "warning"]

    @property
    def ready(self) -> bool:
        return not self.blocking

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "ready": self.ready,
            "blocking": [g.to_json() for g in self.blocking],
            "warnings": [g.to_json() for g in self.warnings],
            "due_to_forget": self.due_to_forget,
        }


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _age_days(stamp: str) -> int:
    return (_today() - dt.date.fromisoformat(stamp[:10])).days


def _doc_gaps(docs: list[Rec]) -> list[Gap]:
    gaps = []
    if not any(d.data.get("overview") or "overview" in d.data["title"].casefold() for d in docs):
        gaps.append(
            Gap("blocking", "no-overview", "no network overview page (doc add SLUG TITLE --overview)")
        )
    for d in docs:
        if _age_days(d.updated_at) > STALE_DAYS:
            gaps.append(Gap("warning", "stale-page", f"page {d.data['title']!r} not updated for over a year"))
    return gaps


def _cred_gaps(creds: list[Rec], not_applicable: set[str]) -> list[Gap]:
    gaps = []
    have = {c.data.get("category") for c in creds}
    for cats, label in ESSENTIAL:
        if not have.intersection(cats) and not not_applicable.intersection(cats):
            gaps.append(
                Gap("blocking", f"no-{cats[0]}", f"no {label} credential (category {'/'.join(cats)})")
            )
    for c in creds:
        label = c.data["label"]
        missing = [f for f in ("username", "url") if not c.data.get(f)]
        if missing:
            gaps.append(
                Gap("warning", "cred-incomplete", f"credential {label!r} has no {' or '.join(missing)}")
            )
        if not c.data.get("secret"):
            gaps.append(Gap("warning", "cred-no-secret", f"credential {label!r} has no secret recorded"))
        exp = c.data.get("expires")
        if exp and (dt.date.fromisoformat(exp) - _today()).days <= EXPIRY_WARN_DAYS:
            gaps.append(Gap("warning", "cred-expiry", f"credential {label!r} expires {exp}"))
    return gaps


def _issue_gaps(issues: list[Rec], acks: dict[str, bool]) -> list[Gap]:
    gaps = []
    for i in issues:
        if i.data.get("status") != "open":
            continue
        title, sev = i.data["title"], i.data.get("severity")
        if not sev:
            gaps.append(Gap("warning", "issue-no-severity", f"issue {title!r} has no severity"))
        if not i.data.get("workaround"):
            gaps.append(Gap("warning", "issue-no-workaround", f"issue {title!r} has no workaround"))
        if not acks.get(i.id):
            level = "blocking" if sev == "critical" else "warning"
            gaps.append(
                Gap(
                    level, f"{sev}-unacknowledged", f"{sev} issue {title!r} is not acknowledged by the client"
                )
            )
    return gaps


def _asset_gaps(assets: list[Rec]) -> list[Gap]:
    gaps = []
    for a in assets:
        exp = a.data.get("expires")
        if exp and (dt.date.fromisoformat(exp) - _today()).days <= EXPIRY_WARN_DAYS:
            kind = a.data.get("expiry_kind") or "expiry"
            gaps.append(Gap("warning", "asset-expiry", f"{a.data['hostname']}: {kind} ends {exp}"))
    return gaps


def profile_gaps(profile: Profile) -> list[Gap]:
    """Warnings (never blocking) when the documents cannot say who is handing over or how to reach them.

    The letter, the bundle's report, the certificate of destruction and the request report are
    signed by the technician profile; without it they keep visible blanks such as ``[your name]``.
    """
    from .profile import SET_COMMAND

    if not profile.is_set:
        return [
            Gap(
                "warning",
                "no-profile",
                "no technician profile: letters, bundles and certificates show blanks such as "
                f"[your name] (set it: {SET_COMMAND})",
            )
        ]
    missing = [("name", "--name NAME")] if not profile.name else []
    if not (profile.phone or profile.email):
        missing.append(("telephone or email", "--phone PHONE --email EMAIL"))
    if not missing:
        return []
    what, options = " and no ".join(w for w, _ in missing), " ".join(o for _, o in missing)
    return [
        Gap(
            "warning",
            "profile-incomplete",
            f"the technician profile has no {what} (set it: handover profile set {options})",
        )
    ]


def acknowledged(v: Vault, client: ClientRef) -> dict[str, bool]:
    """Issue id -> acknowledged as it stands now (empty when acknowledgements are not available)."""
    try:
        from .agreement import ack_state
    except ImportError:
        return {}
    return {row["id"]: bool(row["acknowledged"]) for row in ack_state(v, client)}


def check(v: Vault, slug: str) -> Readiness:
    """Every gap of one client, blocking first."""
    with v.read() as s:
        client = v.clients.get(slug, s)
        recs = {k: v.records.list(s, client, k) for k in ("doc", "cred", "contact", "issue", "asset")}
    gaps = _doc_gaps(recs["doc"])
    gaps += _cred_gaps(recs["cred"], set(client.data.get("not_applicable") or []))
    if not any(c.data.get("authorized") for c in recs["contact"]):
        gaps.append(
            Gap("blocking", "no-authorized-contact", "no authorised contact (contact add --authorized)")
        )
    gaps += _issue_gaps(recs["issue"], acknowledged(v, client))
    successor = client.data.get("successor") or {}
    if not successor.get("recipients"):
        gaps.append(
            Gap("blocking", "no-successor", "no successor recipient key (successor set SLUG --recipient KEY)")
        )
    gaps += _asset_gaps(recs["asset"])
    gaps += profile_gaps(v.profile.get())
    gaps.sort(key=lambda g: g.level != "blocking")
    due = None
    try:
        from .agreement import forget_due

        due = forget_due(client)
    except ImportError:
        pass
    return Readiness(client.slug, gaps, due)
