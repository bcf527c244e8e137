"""Team audit chain: `verify_chain` of 100,000 signed entries against the raw Ed25519 rate, one run.

    python bench/team_chain.py [--entries N] [--rounds R]

The raw rate is `cryptography`'s Ed25519 verify alone, keys loaded once, over the very messages
the chain signs: the floor no verifier of signed entries can beat. The target (issue 16) is that
walking the chain (encoding, hashing, link and sequence checks) keeps at least 50% of that rate.
Rounds alternate raw and chain; medians are reported. Writes its section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from handover_vault.team import chain, memberkey
from handover_vault.team.chain import Entry

TEAM = "bench-team"
MEMBERS = 8
BEGIN, END = "<!-- bench/team_chain.py: begin -->", "<!-- bench/team_chain.py: end -->"


def build(n: int) -> tuple[list[Entry], dict[str, bytes], list[tuple[str, bytes, bytes]]]:
    os.environ["HANDOVER_KDF"] = "minimum"
    with tempfile.TemporaryDirectory() as d:
        keys = {f"m{i}": memberkey.create(Path(d) / f"m{i}", "bench passphrase 1234") for i in range(MEMBERS)}
    entries: list[Entry] = []
    raw: list[tuple[str, bytes, bytes]] = []
    prev = chain.genesis(TEAM)
    for i in range(1, n + 1):
        who = f"m{i % MEMBERS}"
        e = Entry(
            i,
            "2026-12-02T10:00:00Z",
            who,
            "cred.reveal",
            "client-id-0000",
            f"record-{i:08d}",
            "client",
            os.urandom(80),
            os.urandom(32),
            prev,
        )
        e = chain.sign_entry(keys[who], TEAM, e)
        prev = chain.entry_hash(TEAM, e)
        entries.append(e)
        raw.append((who, chain.message(TEAM, e), e.signature))
    return entries, {k: v.public.ed25519 for k, v in keys.items()}, raw


def raw_rate(raw: list[tuple[str, bytes, bytes]], publics: dict[str, bytes]) -> float:
    loaded = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in publics.items()}
    start = time.perf_counter()
    for who, msg, sig in raw:
        loaded[who].verify(sig, msg)
    return len(raw) / (time.perf_counter() - start)


def chain_rate(entries: list[Entry], publics: dict[str, bytes]) -> float:
    start = time.perf_counter()
    verdict = chain.verify_chain(TEAM, entries, publics)
    elapsed = time.perf_counter() - start
    assert verdict.ok and verdict.count == len(entries), verdict
    return len(entries) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    entries, publics, raw = build(args.entries)
    raws, chains = [], []
    for _ in range(args.rounds):
        raws.append(raw_rate(raw, publics))
        chains.append(chain_rate(entries, publics))
    r, c = statistics.median(raws), statistics.median(chains)
    load = os.getloadavg()[0]
    table = (
        f"{BEGIN}\n"
        f"| {args.entries:,} signed entries, {MEMBERS} members | entries/s (median of {args.rounds}) |\n"
        "|---|---|\n"
        f"| raw Ed25519 verify (keys loaded once) | {r:,.0f} |\n"
        f"| `chain.verify_chain` (encode, hash, link, verify) | {c:,.0f} |\n"
        f"| ratio (target ≥ 50%) | **{c / r:.0%}** ({'met' if c / r >= 0.5 else 'not met'}) |\n\n"
        f"Load average at the time: {load:.2f} (2 cores, other jobs sharing the machine).\n"
        f"{END}"
    )
    print(table)
    if not args.no_doc:
        doc = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
        text = doc.read_text(encoding="utf-8")
        if BEGIN in text:
            head, rest = text.split(BEGIN, 1)
            text = head + table + rest.split(END, 1)[1]
        else:
            text += "\n## Team audit chain (issue 16): `bench/team_chain.py`\n\n" + table + "\n"
        doc.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
