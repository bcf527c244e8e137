"""Team audit chain: `audit verify` of 100,000 signed entries against the raw Ed25519 rate, one run.

    python bench/team_chain.py [--entries N] [--rounds R] [--no-doc]

A team vault on a throwaway PostgreSQL server (tests/pgserver.py) is built through the command line
as bench/pg_store.py builds one (``member key``, ``team init``, ``client add``, ``import csv`` of 100
credentials; bob ``team join``, alice ``member add`` and ``grant``), then grown to ``--entries`` signed audit entries by the code every command appends
with (``AuditLog.append`` in write transactions, the two members taking turns, ``cred.reveal``
entries of client ``acme``): each entry MACed, committed and signed by its member as a reveal's is.

Then, rounds alternating:

- **`handover audit verify`**, a real subprocess (alice's member key passphrase in the environment,
  no session): the whole check of a team vault, the MAC chain, the head record, and every signature
  and chain link from the pinned first admin. Its rate is entries over its wall time, start-up and
  unlock included.
- **raw Ed25519**: `cryptography`'s verify alone, keys loaded once, over the very messages and
  signatures stored in that database (read out before the timing): the floor no verifier of these
  entries can beat.
- **`chain.verify_chain` in memory** over the same entries read out of the database: the signature
  walk without the database or the MAC chain (a breakdown; no target).

The target (issue 16) is that `audit verify` keeps at least 50% of the raw rate. Medians are
reported. Writes its section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench.common import ROOT
from bench.pg_store import CLIENT, SMALL, Vault, audit_count, build_team
from handover_vault.team import chain
from handover_vault.team.chain import Entry
from tests.pgserver import PgServer

BEGIN, END = "<!-- bench/team_chain.py: begin -->", "<!-- bench/team_chain.py: end -->"
BATCH = 2000  # entries appended per write transaction


@contextlib.contextmanager
def as_tech(t: Vault) -> Iterator[None]:
    """This process in ``t``'s environment (their member key and pin), to append as they would."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(t.env(HANDOVER_PASSPHRASE=t.passphrase))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build(url: str, work: Path, n: int) -> tuple[Vault, float, float]:
    """The team vault through the command line (bench/pg_store.py's ``build_team``: alice admin,
    bob granted acme), then grown to ``n`` entries: (alice, seconds to build it, seconds to append)."""
    from handover_vault import open_vault

    alice = Vault("alice", work / "alice", url, SMALL, "alice's own member key passphrase")
    bob = Vault("bob", work / "bob", url, SMALL, "bob's own member key passphrase")
    cli = build_team(alice, [bob], work)
    began = time.perf_counter()
    done, turn = _count(url), 0
    while done < n:
        t = (alice, bob)[turn % 2]
        with as_tech(t):
            v = open_vault(url, t.passphrase)
            try:
                acme = v.clients.get(CLIENT)
                with v.write("appending bench entries", bulk=True) as s:
                    for i in range(min(BATCH, n - done)):
                        v.audit.append(
                            s,
                            "cred.reveal",
                            client=acme,
                            record_id=f"rec-{done + i:08d}",
                            detail={"label": "Firewall admin", "fields": ["secret"]},
                        )
            finally:
                v.close()
        done = _count(url)
        turn += 1
        print(f"bench: {done:,} entries", flush=True)
    return alice, cli, time.perf_counter() - began


def _count(url: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT count(*) FROM audit").fetchone()
    return int(row[0]) if row else 0


def stored(
    alice: Vault, url: str
) -> tuple[list[Entry], dict[str, bytes], list[tuple[str, bytes, bytes]], str]:
    """Every signed entry as stored, the members' public keys, (member, message, signature) of each,
    and the team id: read out of the database before any timing."""
    from sqlalchemy import select

    from handover_vault import open_vault
    from handover_vault.store.models import AuditEntry, Member
    from handover_vault.teams import _chain_entry

    with as_tech(alice):
        v = open_vault(url, alice.passphrase)
        try:
            with v.read() as s:
                publics = {m.id: bytes(m.ed25519) for m in s.execute(select(Member)).scalars()}
                rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
                entries = [_chain_entry(r) for r in rows]
            team = v.vault_id
        finally:
            v.close()
    signed = [e for e in entries if e.signature]
    raw = [(e.member_id, chain.message(team, e), e.signature) for e in signed]
    return signed, publics, raw, team


def raw_rate(raw: list[tuple[str, bytes, bytes]], publics: dict[str, bytes]) -> float:
    loaded = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in publics.items()}
    start = time.perf_counter()
    for who, msg, sig in raw:
        loaded[who].verify(sig, msg)
    return len(raw) / (time.perf_counter() - start)


def chain_rate(team: str, entries: list[Entry], publics: dict[str, bytes]) -> float:
    start = time.perf_counter()
    verdict = chain.verify_chain(team, entries, publics, first_seq=entries[0].seq)
    elapsed = time.perf_counter() - start
    assert verdict.ok and verdict.count == len(entries), verdict
    return len(entries) / elapsed


def verify_rate(alice: Vault, n: int) -> float:
    env = alice.env(HANDOVER_PASSPHRASE=alice.passphrase)
    start = time.perf_counter()
    ok, count, out = audit_count(alice, env)
    elapsed = time.perf_counter() - start
    if not ok or count != n:
        raise SystemExit(f"bench: audit verify did not pass over {n} entries: {out}")
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    os.environ["HANDOVER_KDF"] = "minimum"
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="hvtc-", dir="/tmp"))
    os.chmod(work, 0o700)
    pg = PgServer.start()
    try:
        url = pg.create_database("hv_team_chain")
        alice, cli_s, append_s = build(url, work, args.entries)
        total = _count(url)
        entries, publics, raw, team = stored(alice, url)
        verifies, raws, chains = [], [], []
        for _ in range(args.rounds):
            verifies.append(verify_rate(alice, total))
            raws.append(raw_rate(raw, publics))
            chains.append(chain_rate(team, entries, publics))
            print(
                f"bench: audit verify {verifies[-1]:,.0f}/s, raw {raws[-1]:,.0f}/s, chain {chains[-1]:,.0f}/s"
            )
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    r, c, a = statistics.median(raws), statistics.median(chains), statistics.median(verifies)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tree = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    table = (
        f"{BEGIN}\n"
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, tree {tree}, "
        f"`python bench/team_chain.py --entries {args.entries} --rounds {args.rounds}`, "
        f"{time.perf_counter() - began:.0f} s in all: a team vault on PostgreSQL with {total:,} audit entries "
        f"({len(raw):,} signed, by 2 members), built through the command line in {cli_s:.1f} s and grown "
        f"by `AuditLog.append` in {append_s:.0f} s.\n\n"
        f"| {total:,} entries of a real team database | entries/s (median of {args.rounds}) | of the raw rate |\n"
        "|---|---|---|\n"
        f"| raw Ed25519 verify of the stored messages (keys loaded once) | {r:,.0f} | 100% |\n"
        f"| `handover audit verify` (a subprocess: start-up, unlock, MAC chain, signatures, links) | {a:,.0f} | "
        f"**{a / r:.0%}** (target ≥ 50%: {'met' if a / r >= 0.5 else '**not met**'}) |\n"
        f"| `chain.verify_chain` in memory (encode, hash, link, verify) | {c:,.0f} | {c / r:.0%} |\n\n"
        f"Load average at the end: {load} (2 cores).\n"
        f"{END}"
    )
    print(table)
    if not args.no_doc:
        doc = ROOT / "docs" / "performance.md"
        text = doc.read_text(encoding="utf-8")
        if BEGIN in text:
            head, rest = text.split(BEGIN, 1)
            text = head + table + rest.split(END, 1)[1]
        else:
            text += "\n## Team audit chain (issue 16): `bench/team_chain.py`\n\n" + table + "\n"
        doc.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
