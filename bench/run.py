"""Run the side-by-side benchmarks and write docs/performance.md (``make bench``).

    python bench/run.py                     every benchmark, full size, doc updated
    python bench/run.py --only show,import  a subset (the doc keeps the other rows' last results)
    python bench/run.py --quick             small data, 3 rounds: a trend, written to bench/out only
    python bench/run.py --list              the benchmark names

Each comparison runs ours and the peer alternately (A B A B ...) in one loop and reports medians,
with the machine's load average at the time: other jobs share the machine. Not part of the test
suite, and nothing here is a pass/fail assertion: the table says which targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: see --tag

from bench import datasets
from bench.common import (
    DATA,
    HANDOVER,
    KDBX_PASSWORD,
    NEUTRAL_CWD,
    OUT,
    PASSPHRASE,
    PYTHON,
    ROOT,
    RUNTIME,
    STATE,
    Cmd,
    Series,
    alternate,
    alternate_calls,
    base_env,
    loadavg,
    machine,
    need,
)

DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin (written by bench/run.py) -->", "<!-- bench:end -->"


@dataclass
class Row:
    """One line of the results table."""

    bench: str
    name: str
    ours: dict[str, Any]
    peer: dict[str, Any]
    ratio: float
    target: str
    met: bool | None
    load: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Config:
    quick: bool
    rounds: int | None
    rebuild: bool
    rows: list[Row] = field(default_factory=list)
    no_doc: bool = False  # --no-doc or --tag: for the benches that write their own section (pg)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def r(self, full: int) -> int:
        return self.rounds or (3 if self.quick else full)


def _row(
    cfg: Config,
    bench: str,
    name: str,
    ours: Series | dict[str, Any],
    peer: Series | dict[str, Any],
    target: str,
    limit: float | None,
    load: str,
    note: str = "",
    ratio: float | None = None,
) -> Row:
    o = ours.to_json() if isinstance(ours, Series) else ours
    p = peer.to_json() if isinstance(peer, Series) else peer
    value = ratio if ratio is not None else o["median_s"] / p["median_s"]
    row = Row(bench, name, o, p, value, target, None if limit is None else value <= limit, load, note)
    cfg.rows.append(row)
    met = "-" if row.met is None else ("met" if row.met else "NOT met")
    print(
        f"  {name:<44} ours {o['median_s']:8.3f} s  peer {p['median_s']:8.3f} s  "
        f"ratio {value:6.2f}  {target} {met}",
        flush=True,
    )
    return row


# --- sessions ------------------------------------------------------------------------------------


@contextlib.contextmanager
def session(vault: Path) -> Iterator[dict[str, str]]:
    """An unlocked session with its warm agent; yields the environment commands run with."""
    from handover_vault.paths import agent_socket

    RUNTIME.mkdir(mode=0o700, exist_ok=True)
    env = base_env(HANDOVER_VAULT=str(vault), HANDOVER_PASSPHRASE=PASSPHRASE)
    done = subprocess.run(
        [HANDOVER, "unlock", "--for", "3h"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_CWD,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: unlock failed: {done.stderr}")
    token = done.stdout.strip().split("HANDOVER_SESSION=", 1)[1].split()[0]
    os.environ["HANDOVER_RUNTIME_DIR"] = str(RUNTIME)
    sock = agent_socket(token)
    deadline = time.time() + 30
    while sock is not None and not sock.exists() and time.time() < deadline:
        time.sleep(0.05)
    if sock is None or not sock.exists():
        raise SystemExit("bench: the warm agent did not start (no socket)")
    warm = base_env(HANDOVER_VAULT=str(vault), HANDOVER_SESSION=token)
    try:
        yield warm
    finally:
        if not sock.exists():
            print("bench: warning: the agent's socket vanished during the run", file=sys.stderr)
        subprocess.run([HANDOVER, "lock"], env=warm, capture_output=True, check=False, cwd=NEUTRAL_CWD)


def agent_alive(env: dict[str, str]) -> bool:
    from handover_vault.paths import agent_socket

    sock = agent_socket(env["HANDOVER_SESSION"])
    return sock is not None and sock.exists()


# --- the benchmarks --------------------------------------------------------------------------------


def bench_show(cfg: Config) -> None:
    """Warm `cred show --reveal` in a vault of n imported credentials vs keepassxc-cli show."""
    n = cfg.n(10_000, 1_000)
    _xml, kdbx = datasets.kdbx(n, cfg.rebuild)
    vault = datasets.imported(n, cfg.rebuild)
    i = min(datasets.KDBX_ENTRY, n // 2)
    print(f"show: {n} credentials (KDBX made by keepassxc-cli import; vault by handover import keepass)")
    peer = Cmd(
        "keepassxc-cli show",
        [need("keepassxc-cli"), "show", "-q", "-s", str(kdbx), datasets.keepassxc_entry_path(i)],
        stdin=f"{KDBX_PASSWORD}\n".encode(),
    )
    with session(vault) as env:
        ours = Cmd(
            "handover cred show --reveal",
            [HANDOVER, "cred", "show", "acme", datasets.kdbx_title(i), "--reveal"],
            env=env,
        )
        cold = Cmd("handover cred show --reveal (no agent)", ours.argv, env={**env, "HANDOVER_NO_AGENT": "1"})
        load = loadavg()
        a, b, c = alternate([ours, peer, cold], cfg.r(15))
        load = f"{load} → {loadavg()}"
        alive = agent_alive(env)
    note = "warm agent in use (socket present)" if alive else "AGENT SOCKET MISSING"
    _row(cfg, "show", f"cred show --reveal, {n} creds (warm)", a, b, "≤ 0.5× (stretch 0.2×)", 0.5, load, note)
    _row(cfg, "show", f"cred show --reveal, {n} creds (session, no agent)", c, b, "info", None, load)


FLAT = (
    ("cred show --reveal", ["cred", "show", "acme", datasets.TARGET_CRED, "--reveal"]),
    ("doc show", ["doc", "show", "acme", datasets.TARGET_DOC]),
    ("client list", ["client", "list"]),
    ("search", ["search", datasets.NEEDLE]),
)


def bench_flat(cfg: Config) -> None:
    """The same commands on 100 records and on 100,000: the cost must not grow with the vault."""
    small_n, large_n = 100, cfg.n(100_000, 10_000)
    small = datasets.records(small_n, cfg.rebuild)
    large = datasets.records(large_n, cfg.rebuild)
    print(f"flat: {small_n} vs {large_n} records (10 clients)")
    with session(small) as s_env, session(large) as l_env:
        for name, args in FLAT:
            a = Cmd(f"{name} ({large_n})", [HANDOVER, *args], env=l_env)
            b = Cmd(f"{name} ({small_n})", [HANDOVER, *args], env=s_env)
            load = loadavg()
            big, little = alternate([a, b], cfg.r(11))
            load = f"{load} → {loadavg()}"
            note = "warm agent in use" if agent_alive(l_env) and agent_alive(s_env) else "AGENT MISSING"
            _row(
                cfg, "flat", f"{name}: {large_n} vs {small_n} records", big, little, "≤ 1.3×", 1.3, load, note
            )


def bench_startup(cfg: Config) -> None:
    """`handover --help` and shell completion vs a bare interpreter start."""
    print("startup: --help and completion vs python -c pass (no session)")
    env = base_env()
    bare = Cmd("python -c pass", [PYTHON, "-c", "pass"], env=env)
    helps = Cmd("handover --help", [HANDOVER, "--help"], env=env)
    comp_env = {**env, "_HANDOVER_COMPLETE": "bash_complete", "COMP_WORDS": "handover cr", "COMP_CWORD": "1"}
    comp = Cmd("completion", [HANDOVER], env=comp_env)
    comp_sub_env = {**comp_env, "COMP_WORDS": "handover cred sh", "COMP_CWORD": "2"}
    comp_sub = Cmd("completion (subcommand)", [HANDOVER], env=comp_sub_env)
    load = loadavg()
    p, h, c, cs = alternate([bare, helps, comp, comp_sub], cfg.r(15))
    load = f"{load} → {loadavg()}"
    _row(cfg, "startup", "handover --help", h, p, "≤ 6×", 6.0, load)
    _row(cfg, "startup", "completion `handover cr<TAB>`", c, p, "≤ 6×", 6.0, load)
    _row(cfg, "startup", "completion `handover cred sh<TAB>`", cs, p, "≤ 6×", 6.0, load)


def bench_export(cfg: Config) -> None:
    """Export of a client with 200 MiB of attachments vs age sealing the same tar; bundle verify vs age -d."""
    mib = cfg.n(200, 20)
    vault, key, recipient = datasets.attachments(mib, cfg.rebuild)
    work = DATA / "export-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundle, peer_out, tar = work / "ours.tar.age", work / "peer.tar.age", work / "bundle.tar"
    print(f"export: {mib} MiB of attachments")

    def clear(*paths: Path) -> Callable[[], None]:
        return lambda: [p.unlink(missing_ok=True) for p in paths]  # type: ignore[func-returns-value]

    with session(vault) as env:
        local = {**env, "HANDOVER_NO_AGENT": "1"}
        argv = [HANDOVER, "export", "acme", "--recipient", recipient, "--force", "--out", str(bundle)]
        # One export, decrypted by age itself: the exact tar the peer seals.
        clear(bundle)()
        subprocess.run(argv, env=local, check=True, capture_output=True, cwd=NEUTRAL_CWD)
        subprocess.run([need("age"), "-d", "-i", str(key), "-o", str(tar), str(bundle)], check=True)
        ours = Cmd("handover export (no agent)", argv, env=local, setup=clear(bundle))
        warm = Cmd("handover export (warm agent)", argv, env=env, setup=clear(bundle))
        peer = Cmd(
            "age -r", [need("age"), "-r", recipient, "-o", str(peer_out), str(tar)], setup=clear(peer_out)
        )
        load = loadavg()
        a, b, c = alternate([ours, peer, warm], cfg.r(5))
        load = f"{load} → {loadavg()}"
    mem = f"peak RSS {a.peak_mib:.1f} MiB (age {b.peak_mib:.1f} MiB)"
    _row(cfg, "export", f"export, {mib} MiB attachments (no agent)", a, b, "≤ 1.3×, < 64 MiB", 1.3, load, mem)
    rows = cfg.rows
    rows[-1].met = rows[-1].met and a.peak_mib < 64
    _row(cfg, "export", f"export, {mib} MiB attachments (warm agent)", c, b, "info", None, load)
    subprocess.run(
        argv, env=local, check=True, capture_output=True, cwd=NEUTRAL_CWD
    ) if not bundle.exists() else None
    verify = Cmd(
        "handover bundle verify",
        [HANDOVER, "bundle", "verify", str(bundle), "--identity", str(key)],
        env=base_env(HANDOVER_VAULT=str(vault)),
    )
    peer_d = Cmd("age -d", [need("age"), "-d", "-i", str(key), "-o", "/dev/null", str(bundle)])
    load = loadavg()
    a, b = alternate([verify, peer_d], cfg.r(5))
    load = f"{load} → {loadavg()}"
    mem = f"peak RSS {a.peak_mib:.1f} MiB (age {b.peak_mib:.1f} MiB)"
    _row(cfg, "export", f"bundle verify, {mib} MiB bundle", a, b, "≤ 1.3×, < 64 MiB", 1.3, load, mem)
    rows[-1].met = rows[-1].met and a.peak_mib < 64
    shutil.rmtree(work, ignore_errors=True)


def bench_audit(cfg: Config) -> None:
    """`audit verify` entries per second vs the raw HMAC-SHA256 rate over the same entry bytes."""
    import gc
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hmac as chmac
    from sqlalchemy import select

    from handover_vault import open_vault
    from handover_vault.integrity.audit import check_row, entry_bytes
    from handover_vault.store.models import AuditEntry

    n = cfg.n(100_000, 10_000)
    path = datasets.audit(n, cfg.rebuild)
    print(f"audit: {n} entries")
    os.environ.update(HANDOVER_KDF="minimum", HANDOVER_RUNTIME_DIR=str(RUNTIME))
    columns = ("seq", "at", "action", "client_id", "record_id", "scope", "detail", "mac")
    with open_vault(path, passphrase=PASSPHRASE) as v:
        with v.read() as s:
            table = AuditEntry.__table__
            q = select(*(table.c[c] for c in columns)).order_by(table.c.seq)
            rows = [check_row(r) for r in s.connection().execute(q)]
        entries = [entry_bytes(v.vault_id, r) for r in rows]
        key, genesis = v.audit.key, v.audit.genesis
        count = len(entries)
        del rows
        # The bench holds data sets and modules a real `audit verify` process does not: freeze them
        # so that garbage collections during the timed calls do not walk the bench's own heap.
        gc.collect()
        gc.freeze()

        def raw_stdlib() -> None:
            prev = genesis
            for data in entries:
                prev = hmac.digest(key, prev + data, hashlib.sha256)

        keyed = chmac.HMAC(key, hashes.SHA256())

        def raw_fastest() -> None:
            prev = genesis
            for data in entries:
                h = keyed.copy()
                h.update(prev + data)
                prev = h.finalize()

        load = loadavg()
        calls = [("verify", v.audit.verify), ("stdlib", raw_stdlib), ("fastest", raw_fastest)]
        times = alternate_calls(calls, cfg.r(7))
        load = f"{load} → {loadavg()}"

    def series(label: str, command: str, key: str) -> dict[str, Any]:
        return {
            "label": label,
            "command": command,
            "median_s": statistics.median(times[key]),
            "runs_s": times[key],
        }

    ours = series(
        "handover_vault.integrity.audit.verify()", "v.audit.verify()  # in process, vault open", "verify"
    )
    peers = (
        series(
            "raw HMAC, stdlib hmac.digest",
            "prev = hmac.digest(key, prev + entry_bytes, hashlib.sha256) for each entry, bytes in memory",
            "stdlib",
        ),
        series(
            "raw HMAC, cryptography keyed once",
            "h = HMAC(key, SHA256()).copy(); h.update(prev + entry_bytes); prev = h.finalize(), bytes in memory",
            "fastest",
        ),
    )
    # The table's ratio is time over time; the target is a rate >= 40% of raw, i.e. time <= 2.5x.
    for peer in peers:
        rate = peer["median_s"] / ours["median_s"]
        note = f"{count / ours['median_s']:,.0f} entries/s vs raw {count / peer['median_s']:,.0f}/s: {rate:.0%} of raw"
        name = f"audit verify (library), {count} entries, vs {peer['label']}"
        _row(cfg, "audit", name, ours, peer, "≤ 2.5× (≥ 40% of raw rate)", 2.5, load, note)
    with session(path) as env:
        cmd = Cmd("handover audit verify", [HANDOVER, "audit", "verify"], env=env)
        load = loadavg()
        (a,) = alternate([cmd], cfg.r(5))
        load = f"{load} → {loadavg()}"
    rate = peers[0]["median_s"] / a.median
    note = f"whole command, warm: {count / a.median:,.0f} entries/s, {rate:.0%} of raw (stdlib)"
    _row(
        cfg, "audit", f"handover audit verify (warm), {count} entries", a, peers[0], "≤ 2.5×", 2.5, load, note
    )


def bench_import(cfg: Config) -> None:
    """`handover import keepass` of n KDBX entries into a fresh vault vs `keepassxc-cli import` of them."""
    n = cfg.n(10_000, 1_000)
    xml, kdbx = datasets.kdbx(n, cfg.rebuild)
    template = datasets.import_template(cfg.rebuild)
    work = DATA / "import-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    target, peer_out = work / "vault.db", work / "peer.kdbx"
    print(f"import: {n} KDBX entries")

    def fresh_vault() -> None:
        for suffix in ("-wal", "-shm", ""):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, target)
        # The copy is older than the import before it wrote: a fresh machine for each run.
        shutil.rmtree(STATE, ignore_errors=True)

    argv = [HANDOVER, "import", "keepass", "acme", str(kdbx)]
    with session(template) as env:
        # Copies of the template share its vault id, so its session unlocks each fresh copy.
        warm_env = {**env, "HANDOVER_VAULT": str(target), "HANDOVER_IMPORT_PASSPHRASE": KDBX_PASSWORD}
        ours = Cmd("handover import keepass (warm)", argv, env=warm_env, setup=fresh_vault)
        cold_env = base_env(
            HANDOVER_VAULT=str(target),
            HANDOVER_PASSPHRASE=PASSPHRASE,
            HANDOVER_IMPORT_PASSPHRASE=KDBX_PASSWORD,
        )
        cold = Cmd("handover import keepass (passphrase)", argv, env=cold_env, setup=fresh_vault)
        peer = Cmd(
            "keepassxc-cli import",
            datasets.keepassxc_import_argv(xml, peer_out),
            stdin=f"{KDBX_PASSWORD}\n{KDBX_PASSWORD}\n".encode(),
            setup=lambda: peer_out.unlink(missing_ok=True),
        )
        load = loadavg()
        a, b, c = alternate([ours, peer, cold], cfg.r(5))
        load = f"{load} → {loadavg()}"
    _row(cfg, "import", f"import keepass, {n} entries (warm)", a, b, "≤ 2.5×", 2.5, load)
    _row(cfg, "import", f"import keepass, {n} entries (passphrase, no agent)", c, b, "info", None, load)
    shutil.rmtree(work, ignore_errors=True)


def bench_pg(cfg: Config) -> None:
    """Team vaults on PostgreSQL vs SQLite (bench/pg_store.py: its own section of the doc)."""
    from bench import pg_store

    argv = ["--large", "10000", "--rounds", "3", "--per-proc", "3"] if cfg.quick else []
    if cfg.rounds:
        argv += ["--rounds", str(cfg.rounds)]
    if cfg.quick or cfg.no_doc:
        argv.append("--no-doc")
    pg_store.main(argv)


BENCHES: dict[str, Callable[[Config], None]] = {
    "show": bench_show,
    "flat": bench_flat,
    "startup": bench_startup,
    "export": bench_export,
    "audit": bench_audit,
    "import": bench_import,
    "pg": bench_pg,
}


# --- output ----------------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        BEGIN,
        "",
        f"Last full run: {results['finished']}. Machine: {m['cpu']}, {m['memory']} RAM, {m['os']}.",
        f"{m['python']}; {m['packages']}; {m['handover']}; keepassxc-cli {m['keepassxc-cli']}; "
        f"age {m['age']}.",
        "",
        "| Benchmark | Ours (median) | Peer (median) | Ratio | Target | Met | Load avg (1 5 15 min) | Notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for name in BENCHES for r in results["benches"].get(name, {}).get("rows", [])]
    for r in rows:
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['name']} | {r['ours']['median_s']:.3f} s | {r['peer']['median_s']:.3f} s "
            f"({r['peer']['label']}) | {r['ratio']:.2f}× | {r['target']} | {met} | {r['load']} | {r['note']} |"
        )
    lines += ["", "Exact commands (ours, then the peer; `bench/data` is the data cache):", ""]
    for r in rows:
        lines.append(f"- {r['name']}: `{r['ours']['command']}` vs `{r['peer']['command']}`")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(results: dict[str, Any]) -> None:
    block = render(results)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _old, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    ap.add_argument(
        "--quick", action="store_true", help="small data sets and 3 rounds (not written to the doc)"
    )
    ap.add_argument("--rounds", type=int, help="rounds per comparison (default: per benchmark)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached data sets")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/performance.md")
    ap.add_argument(
        "--tag",
        help="store results as bench/out/results-TAG.json and leave the doc alone "
        "(e.g. a run with PYTHONPATH=<older tree> for a before/after figure)",
    )
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in BENCHES.items():
            print(f"{name:8} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    # pg needs a PostgreSQL installation and writes its own section: only when asked for (--only pg).
    names = [n.strip() for n in args.only.split(",")] if args.only else [n for n in BENCHES if n != "pg"]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}; see --list")
    for tool in ("keepassxc-cli", "age", "age-keygen"):
        need(tool)
    os.environ.update(HANDOVER_KDF="minimum", HANDOVER_RUNTIME_DIR=str(RUNTIME))
    DATA.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / ("quick.json" if args.quick else f"results-{args.tag}.json" if args.tag else "results.json")
    try:
        results = json.loads(store.read_text())
    except (OSError, ValueError):
        results = {"benches": {}}
    results["machine"] = machine()
    import handover_vault

    results["tree"] = str(Path(handover_vault.__file__).resolve().parents[1])
    print(f"bench: handover from {results['tree']}", flush=True)
    print(f"bench: load average {loadavg()}; {results['machine']['cpu']}", flush=True)
    for name in names:
        cfg = Config(args.quick, args.rounds, args.rebuild, no_doc=args.no_doc or bool(args.tag))
        BENCHES[name](cfg)
        results["benches"][name] = {
            "rows": [r.to_json() for r in cfg.rows],
            "at": time.strftime("%Y-%m-%d %H:%M"),
        }
    results["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    store.write_text(json.dumps(results, indent=2))
    if not args.quick and not args.no_doc and not args.tag:
        write_doc(results)
        print(f"bench: wrote {DOC.relative_to(ROOT)}")
    print(f"bench: results in {store.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
