"""Team vaults on PostgreSQL (issue 16): the warm reveal on PostgreSQL against SQLite, in one run.

    python bench/pg_store.py [--rounds R] [--large N] [--procs P] [--per-proc K] [--no-doc]
    python bench/run.py --only pg            the same, from the bench driver

What it measures, each with the installed ``handover`` in real subprocesses (forked by
bench/runner.py, timed with ``os.wait4``), a private HOME, XDG folders and HANDOVER_RUNTIME_DIR for
every vault, ``HANDOVER_KDF=minimum`` and the passphrase only in the environment:

1. ``cred show acme REF --reveal``, warm (``handover unlock``'s session and agent), on a vault in
   PostgreSQL on the loopback against the same content in an SQLite file; A B A B after warm-up
   rounds, medians. Also the same with ``HANDOVER_NO_AGENT=1`` (session, no agent). Target: PG at
   most 1.5x SQLite.
2. The same warm reveal on a PostgreSQL vault holding ``--large`` records against one holding 100.
   Target: at most 1.3x.
3. ``--procs`` processes revealing at once, ``--per-proc`` warm reveals each: on the team vault of
   4 one process per member (the admin and ``--procs`` - 1 members, each with their own session),
   against the same on the single-user PostgreSQL vault and on SQLite with ``--procs`` processes
   of one session (rounds alternate the three): reveals per second over the whole burst; then
   ``audit verify`` must pass and the log must have grown by exactly one entry per reveal.
4. The warm reveal by a team member against the single-user PostgreSQL vault of 1: a team vault
   (``member key``, ``team init``, then for each member ``team join``, ``member add``, ``grant``, as
   tests/test_team.py does, each technician with their own HOME and XDG folders and the member key in its default
   place under XDG_DATA_HOME) with the same 100 credentials, revealed by the second technician,
   granted ``acme`` by the admin and unlocked with ``handover unlock`` and their member key's
   passphrase. The cost of grants and endorsement checks per command. No target.

Every warm row is timed only while each agent's socket exists (checked before and after the
loops); a missing socket stops the bench, so a cold time is never reported as a warm one.

The server is tests/pgserver.py's throwaway cluster, made durable for the run (``fsync``,
``synchronous_commit`` and ``full_page_writes`` on, as SQLite's ``synchronous = FULL``), and
stopped at the end. Nothing is cached: the vaults are built in a temp folder and removed.
Writes its section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import HANDOVER, PASSPHRASE, ROOT, Cmd, Series, alternate, home_env, loadavg
from tests.pgserver import PgServer, find_bin_dir

DOC = ROOT / "docs" / "performance.md"
HEADING = "## Team vaults on PostgreSQL (issue 16): `bench/pg_store.py`"
BEGIN, END = "<!-- bench/pg_store.py: begin -->", "<!-- bench/pg_store.py: end -->"
TARGET = "Core firewall admin"
CLIENT = "acme"
SMALL = 100
REVEAL = ["cred", "show", CLIENT, TARGET, "--reveal"]
TEAM_BURST = "PostgreSQL team vault, {n} members (a session each)"
PG_BURST = "PostgreSQL, one technician's session"
LITE_BURST = "SQLite, one technician's session"


# --- vaults ---------------------------------------------------------------------------------------


@dataclass
class Vault:
    """One vault and the private folders of every command run against it."""

    name: str
    home: Path
    target: str  # a file path or a postgresql+psycopg URL
    size: int
    passphrase: str = PASSPHRASE  # the vault's, or on a team vault the technician's member key's

    @property
    def engine(self) -> str:
        return "PostgreSQL" if self.target.startswith("postgresql") else "SQLite"

    def env(self, **extra: str) -> dict[str, str]:
        where = "HANDOVER_DB_URL" if self.engine == "PostgreSQL" else "HANDOVER_VAULT"
        return home_env(self.home, **{where: self.target, **extra})

    def unlocked(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command with the passphrase in the environment (no session)."""
        return self.run(*args, HANDOVER_PASSPHRASE=self.passphrase)

    def run(self, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [HANDOVER, *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.home,
        )
        if check and done.returncode != 0:
            raise SystemExit(
                f"bench: {self.name}: handover {' '.join(args[:3])} failed: {done.stderr[-2000:]}"
            )
        return done


IMPORT_MAX = 10_000  # `handover import csv` takes at most this many credentials a file


def write_csv(path: Path, rows: range, target: bool) -> None:
    """Credentials numbered ``rows``; with ``target``, first the one every reveal shows (the same in
    every vault)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "username", "password", "url", "notes", "category"])
        if target:
            w.writerow(
                [TARGET, "admin", "Fw-bench-s3cret", "https://fw1.acme.example", "the edge", "firewall"]
            )
        for i in rows:
            w.writerow(
                [
                    f"Entry {i:06d}",
                    f"admin{i}",
                    f"S3cret-{i:08x}-{(i * 2654435761) % 2**32:08x}",
                    f"https://host{i}.example.net/admin",
                    f"switch {i % 97} in rack {i % 40}, vlan {i % 200}",
                    ("firewall", "dns", "server", "network", "wifi")[i % 5],
                ]
            )


def folders(v: Vault) -> None:
    for sub in ("config", "data", "state", "cache"):
        (v.home / sub).mkdir(parents=True, exist_ok=True)
    (v.home / "rt").mkdir(mode=0o700, exist_ok=True)


FINGERPRINT = re.compile(r"Fingerprint: (hv:[0-9a-f-]+)")


def member_key(v: Vault) -> str:
    """``handover member key``: the key in its default place under XDG_DATA_HOME; its fingerprint."""
    out = v.unlocked("member", "key").stdout
    m = FINGERPRINT.search(out)
    if m is None:
        raise SystemExit(f"bench: {v.name}: no fingerprint in `member key`'s output: {out}")
    return m.group(1)


def build_team(admin: Vault, members: list[Vault], work: Path) -> float:
    """A team vault as tests/test_team.py builds one: the admin makes their member key, ``team
    init``, adds ``acme`` and imports the same ``SMALL`` credentials as :func:`build`; each member
    makes theirs and ``team join`` pinning the admin; the admin ``member add`` and ``grant acme``
    each of them."""
    for v in (admin, *members):
        folders(v)
    start = time.perf_counter()
    a_fp = member_key(admin)
    admin.unlocked("team", "init", "--name", admin.name, "--recovery-out", str(work / "recovery.txt"))
    admin.unlocked("client", "add", CLIENT, "--name", f"{CLIENT.upper()} Ltd")
    path = work / f"{admin.name}.csv"
    write_csv(path, range(1, admin.size), target=True)
    admin.unlocked("import", "csv", CLIENT, str(path))
    path.unlink()
    for member in members:
        m_fp = member_key(member)
        member.unlocked("team", "join", "--admin", a_fp, "--name", member.name)
        admin.unlocked("member", "add", member.name, "--fingerprint", m_fp)
        admin.unlocked("grant", CLIENT, member.name)
    return time.perf_counter() - start


def build(v: Vault, work: Path) -> float:
    """init, client add, import csv, through the command line as a technician would: ``v.size``
    credentials, in files of at most 10,000 (the import's limit), one client per file after acme."""
    folders(v)
    start = time.perf_counter()
    v.run("init", HANDOVER_NEW_PASSPHRASE=v.passphrase)
    chunks = [range(lo, min(lo + IMPORT_MAX, v.size)) for lo in range(0, v.size, IMPORT_MAX)]
    for n, rows in enumerate(chunks):
        slug = CLIENT if n == 0 else f"client{n:02d}"
        v.run("client", "add", slug, "--name", f"{slug.upper()} Ltd", HANDOVER_PASSPHRASE=v.passphrase)
        path = work / f"{v.name}-{n}.csv"
        # acme: the target, then the rest of its share (one row fewer, so the sizes stay exact).
        write_csv(path, range(rows.start + 1, rows.stop) if n == 0 else rows, target=n == 0)
        v.run("import", "csv", slug, str(path), HANDOVER_PASSPHRASE=v.passphrase)
        path.unlink()
    return time.perf_counter() - start


def agent_socket(v: Vault, token: str) -> Path:
    sid = token.split(".")[1]
    return v.home / "rt" / "sessions" / f"{sid}.sock"


@contextlib.contextmanager
def session(v: Vault) -> Iterator[tuple[dict[str, str], bool]]:
    """``eval "$(handover unlock)"``: yields (the warm environment, whether the agent's socket came)."""
    done = v.run("unlock", "--for", "3h", HANDOVER_PASSPHRASE=v.passphrase)
    token = done.stdout.split("HANDOVER_SESSION=", 1)[1].split()[0]
    sock = agent_socket(v, token)
    deadline = time.time() + 30
    while not sock.exists() and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield v.env(HANDOVER_SESSION=token), sock.exists()
    finally:
        subprocess.run(
            [HANDOVER, "lock"],
            env=v.env(HANDOVER_SESSION=token),
            capture_output=True,
            check=False,
            cwd=v.home,
        )


def audit_count(v: Vault, env: dict[str, str]) -> tuple[bool, int, str]:
    """(``audit verify`` passed, its entry count, its output)."""
    done = subprocess.run(
        [HANDOVER, "audit", "verify"], env=env, capture_output=True, text=True, check=False, cwd=v.home
    )
    out = (done.stdout + done.stderr).strip()
    m = re.search(r"intact: (\d+) entries", out)
    return done.returncode == 0 and m is not None, int(m.group(1)) if m else -1, out


# --- the comparisons ---------------------------------------------------------------------


@dataclass
class Result:
    name: str
    ours: Series
    peer: Series
    target: float | None
    load: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours.median / self.peer.median


def compare(name: str, a: Cmd, b: Cmd, rounds: int, warmup: int, target: float | None, note: str) -> Result:
    load = loadavg()
    sa, sb = alternate([a, b], rounds, warmup)
    r = Result(name, sa, sb, target, f"{load} → {loadavg()}", note)
    met = "" if target is None else (" met" if r.ratio <= target else " NOT MET")
    print(
        f"  {name:<52} {sa.median * 1000:7.1f} ms vs {sb.median * 1000:7.1f} ms  {r.ratio:.2f}×{met}",
        flush=True,
    )
    return r


@dataclass
class Burst:
    engine: str
    reveals: int
    failed: int
    seconds: float
    verified: bool
    added: int
    load: str
    errors: list[str]

    @property
    def rate(self) -> float:
        return (self.reveals - self.failed) / self.seconds


def burst(v: Vault, envs: list[dict[str, str]], per_proc: int, engine: str = "") -> Burst:
    """One worker per environment in ``envs`` (a process each: the same session, or on a team vault
    each member's own), each running ``per_proc`` reveals one after the other, all at once."""
    procs, env = len(envs), envs[0]
    engine = engine or v.engine
    ok_before, before, out = audit_count(v, env)
    if not ok_before:
        raise SystemExit(f"bench: audit verify failed before the burst on {engine}: {out}")
    failures: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(procs + 1)

    def worker(env: dict[str, str]) -> None:
        go.wait()
        for _ in range(per_proc):
            done = subprocess.run(
                [HANDOVER, *REVEAL], env=env, capture_output=True, text=True, check=False, cwd=v.home
            )
            if done.returncode != 0 or "Fw-bench-s3cret" not in done.stdout:
                with lock:
                    failures.append(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")

    threads = [threading.Thread(target=worker, args=(e,)) for e in envs]
    for t in threads:
        t.start()
    load = loadavg()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    load = f"{load} → {loadavg()}"
    ok, after, out = audit_count(v, env)
    if not ok:
        print(f"bench: audit verify FAILED after the burst on {engine}: {out}", file=sys.stderr)
    b = Burst(engine, procs * per_proc, len(failures), seconds, ok, after - before, load, failures[:3])
    print(
        f"  {procs} × {per_proc} reveals on {engine:<10} {b.rate:6.1f} reveals/s  "
        f"({b.seconds:.2f} s, {b.failed} failed, audit verify {'ok' if ok else 'FAILED'}, "
        f"+{b.added} entries for {b.reveals - b.failed} reveals)",
        flush=True,
    )
    return b


# --- the doc ---------------------------------------------------------------------------------------


def fmt_ms(s: Series) -> str:
    return f"{s.median * 1000:.0f} ms"


def verdict(r: Result) -> str:
    if r.target is None:
        return "info"
    return f"≤ {r.target}×: {'met' if r.ratio <= r.target else '**NOT MET**'}"


def render(info: dict[str, Any], results: list[Result], bursts: list[Burst], notes: list[str]) -> str:
    lines = [
        BEGIN,
        f"Run {info['finished']} on {info['machine']} ({info['versions']}), "
        f"tree {info['tree']}. `python bench/pg_store.py --rounds {info['rounds']} --large {info['large']} "
        f"--procs {info['procs']} --per-proc {info['per_proc']}`, {info['seconds']:.0f} s in all.",
        "",
        "| Comparison | A (median) | B (median) | A / B | Target | Load avg (1 5 15 min), start → end |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {fmt_ms(r.ours)} ({r.ours.label}) | {fmt_ms(r.peer)} ({r.peer.label}) | "
            f"{r.ratio:.2f}× | {verdict(r)} | {r.load} |"
        )
    lines += [
        "",
        f"{info['procs']} processes revealing at once, {info['per_proc']} warm reveals each "
        "(`cred show --reveal`, one audit entry each, signed by its member on the team vault). On the "
        "team vault each process is another member, with their own home, member key and session; on "
        "the others the processes share one technician's session. Rounds alternate the vaults:",
        "",
        "| Vault | Round | Reveals | Failed | Wall time | Reveals/s | `audit verify` | New audit entries | Lost | Load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rounds: dict[str, int] = {}
    for b in bursts:
        rounds[b.engine] = rounds.get(b.engine, 0) + 1
        lost = (b.reveals - b.failed) - b.added
        lines.append(
            f"| {b.engine} | {rounds[b.engine]} | {b.reveals} | {b.failed} | {b.seconds:.2f} s | {b.rate:.1f} | "
            f"{'passes' if b.verified else '**FAILS**'} | {b.added} | {lost} | {b.load} |"
        )
    for engine in dict.fromkeys(b.engine for b in bursts):
        rates = [b.rate for b in bursts if b.engine == engine]
        lines.append(f"| {engine} | median | | | | **{statistics.median(rates):.1f}** | | | | |")
    lines += ["", *notes, END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    """Replace the measured block of the section (the notes written around it stay), or the whole
    section when it has no block, or add the section at the end."""
    text = DOC.read_text(encoding="utf-8")
    if HEADING in text:
        head, rest = text.split(HEADING, 1)
        nxt = rest.find("\n## ")
        body, tail = (rest[:nxt], rest[nxt + 1 :]) if nxt >= 0 else (rest, "")
        if BEGIN in body and END in body:
            before, after = body.split(BEGIN, 1)
            body = before + block + after.split(END, 1)[1]
        else:
            body = "\n\n" + block + "\n"
        text = head + HEADING + body.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + HEADING + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


def machine() -> tuple[str, str]:
    import platform
    import sqlite3
    from importlib.metadata import version

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = "?"
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        pg = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    versions = (
        f"CPython {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {pg}, "
        f"psycopg {version('psycopg')}, SQLAlchemy {version('SQLAlchemy')}"
    )
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}", versions


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per comparison (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    ap.add_argument("--large", type=int, default=100_000, help="records in the large vault")
    ap.add_argument("--procs", type=int, default=8, help="processes revealing at once")
    ap.add_argument("--per-proc", type=int, default=20, help="reveals per process")
    ap.add_argument("--burst-rounds", type=int, default=2, help="bursts per engine, alternated")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/performance.md")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (for profiling)")
    args = ap.parse_args(argv)
    began = time.perf_counter()
    if find_bin_dir() is None:
        raise SystemExit("bench: PostgreSQL (initdb, pg_ctl) is not installed")
    # Short: an AF_UNIX socket path must stay under 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="hvpg-", dir="/tmp"))
    os.chmod(work, 0o700)
    pg = PgServer.start()
    notes: list[str] = []
    try:
        # Durable commits, like SQLite's synchronous = FULL (the test cluster starts without them).
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            pg.execute(f"ALTER SYSTEM SET {setting} = on")
        pg.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres") as conn:
            shown = {k: conn.execute(f"SHOW {k}").fetchone() for k in ("fsync", "synchronous_commit")}
        if any(v is None or v[0] != "on" for v in shown.values()):
            raise SystemExit(f"bench: could not make the server durable: {shown}")
        print(f"bench: PostgreSQL on 127.0.0.1:{pg.port}; work folder {work}", flush=True)
        lite = Vault("sqlite-100", work / "l", str(work / "l" / "vault.db"), SMALL)
        pg_small = Vault("pg-100", work / "ps", pg.create_database("hv_small"), SMALL)
        pg_large = Vault(f"pg-{args.large}", work / "pl", pg.create_database("hv_large"), args.large)
        team_url = pg.create_database("hv_team")
        admin = Vault("alice", work / "ta", team_url, SMALL, "alice's own member key passphrase")
        names = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "ken"]
        members = [
            Vault(n, work / f"t{i}", team_url, SMALL, f"{n}'s own member key passphrase")
            for i, n in enumerate(names[: max(1, args.procs - 1)])
        ]
        member = members[0]
        built = {}
        for v in (lite, pg_small, pg_large):
            print(f"bench: building {v.name} ...", flush=True)
            built[v.name] = build(v, work)
            print(f"bench: built {v.name} in {built[v.name]:.1f} s", flush=True)
        print(
            f"bench: building the team vault (alice admin, {len(members)} members granted acme) ...",
            flush=True,
        )
        built[f"team-{SMALL}"] = build_team(admin, members, work)
        print(f"bench: built team-{SMALL} in {built[f'team-{SMALL}']:.1f} s", flush=True)
        results: list[Result] = []
        bursts: list[Burst] = []
        with session(lite) as (l_env, l_agent), session(pg_small) as (s_env, s_agent):
            with session(pg_large) as (g_env, g_agent), session(member) as (m_env, m_agent):
                agents = {
                    "SQLite": l_agent,
                    "PostgreSQL (100)": s_agent,
                    f"PostgreSQL ({args.large})": g_agent,
                    "team member (100)": m_agent,
                }
                print(f"bench: agent sockets present: {agents}", flush=True)
                missing = [k for k, ok in agents.items() if not ok]
                if missing:  # never time cold commands as warm ones
                    raise SystemExit(f"bench: the warm agent's socket never came for {', '.join(missing)}")
                warm = "warm agent"
                pg_warm = Cmd("PostgreSQL", [HANDOVER, *REVEAL], env=s_env, cwd=pg_small.home)
                lite_warm = Cmd("SQLite", [HANDOVER, *REVEAL], env=l_env, cwd=lite.home)
                results.append(
                    compare(
                        f"1. warm `cred show --reveal`, {SMALL} creds: PostgreSQL vs SQLite",
                        pg_warm,
                        lite_warm,
                        args.rounds,
                        args.warmup,
                        1.5,
                        warm,
                    )
                )
                pg_cold = Cmd(
                    "PostgreSQL", pg_warm.argv, env={**s_env, "HANDOVER_NO_AGENT": "1"}, cwd=pg_small.home
                )
                lite_cold = Cmd(
                    "SQLite", lite_warm.argv, env={**l_env, "HANDOVER_NO_AGENT": "1"}, cwd=lite.home
                )
                results.append(
                    compare(
                        f"1b. session, no agent (`HANDOVER_NO_AGENT=1`), {SMALL} creds: PostgreSQL vs SQLite",
                        pg_cold,
                        lite_cold,
                        args.rounds,
                        args.warmup,
                        None,
                        "no agent",
                    )
                )
                big = Cmd(f"{args.large:,} records", [HANDOVER, *REVEAL], env=g_env, cwd=pg_large.home)
                little = Cmd(f"{SMALL} records", [HANDOVER, *REVEAL], env=s_env, cwd=pg_small.home)
                results.append(
                    compare(
                        f"2. warm `cred show --reveal` on PostgreSQL: {args.large:,} vs {SMALL} records",
                        big,
                        little,
                        args.rounds,
                        args.warmup,
                        1.3,
                        warm,
                    )
                )
                team_warm = Cmd("team member", [HANDOVER, *REVEAL], env=m_env, cwd=member.home)
                check = subprocess.run(
                    team_warm.argv, env=m_env, capture_output=True, text=True, check=False, cwd=member.home
                )
                if check.returncode != 0 or "Fw-bench-s3cret" not in check.stdout:
                    raise SystemExit(f"bench: the team member's warm reveal failed: {check.stderr[-2000:]}")
                results.append(
                    compare(
                        f"4. warm `cred show --reveal` by a team member (granted), {SMALL} creds: "
                        "team vs single-user PostgreSQL",
                        team_warm,
                        pg_warm,
                        args.rounds,
                        args.warmup,
                        None,
                        warm,
                    )
                )
                print(f"bench: {args.procs} processes at once", flush=True)
                with contextlib.ExitStack() as stack:
                    team = [stack.enter_context(session(t)) for t in (admin, *members)]
                    if not all(ok for _, ok in team):
                        raise SystemExit("bench: the warm agent's socket never came for a team member")
                    team_envs = [env for env, _ in team][: args.procs]
                    for _ in range(args.burst_rounds):
                        bursts.append(
                            burst(admin, team_envs, args.per_proc, TEAM_BURST.format(n=len(team_envs)))
                        )
                        bursts.append(burst(pg_small, [s_env] * args.procs, args.per_proc, PG_BURST))
                        bursts.append(burst(lite, [l_env] * args.procs, args.per_proc, LITE_BURST))
                still = {
                    "SQLite": agent_socket(lite, l_env["HANDOVER_SESSION"]).exists(),
                    "PostgreSQL (100)": agent_socket(pg_small, s_env["HANDOVER_SESSION"]).exists(),
                    f"PostgreSQL ({args.large})": agent_socket(pg_large, g_env["HANDOVER_SESSION"]).exists(),
                    "team member (100)": agent_socket(member, m_env["HANDOVER_SESSION"]).exists(),
                }
                print(f"bench: agent sockets still present after the loops: {still}", flush=True)
                gone = [k for k, ok in still.items() if not ok]
                if gone:  # some timed runs may have been cold: report nothing
                    raise SystemExit(f"bench: the warm agent's socket went away for {', '.join(gone)}")
        machine_s, versions = machine()
        info = {
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_s,
            "versions": versions,
            "tree": subprocess.run(
                ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
            "rounds": args.rounds,
            "large": args.large,
            "procs": args.procs,
            "per_proc": args.per_proc,
            "seconds": time.perf_counter() - began,
            "built": built,
            "agents": still,
        }
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "pg_store.json").write_text(
            json.dumps(
                {
                    "info": info,
                    "results": [
                        {"name": r.name, "a": r.ours.to_json(), "b": r.peer.to_json(), "ratio": r.ratio}
                        for r in results
                    ],
                    "bursts": [b.__dict__ for b in bursts],
                },
                indent=2,
            )
        )
        clients = -(-args.large // IMPORT_MAX)
        notes.append(
            "Vaults built through the command line (`init`, `client add`, `import csv`, files of at most "
            f"10,000 credentials, so the {args.large:,}-record vault has {clients} "
            f"client{'s' if clients != 1 else ''}; the team vault by `member key` for each technician, `team init`, "
            f"`client add`, `import csv`, and `team join`, `member add`, `grant` for {len(members)} members): "
            + ", ".join(f"{k} {t:.1f} s" for k, t in built.items())
            + ". PostgreSQL ran "
            "with fsync, synchronous_commit and full_page_writes on (durable commits, as SQLite's "
            "synchronous = FULL); agent sockets present before and after the loops: "
            + ", ".join(f"{k} {'yes' if agents[k] and ok else 'NO'}" for k, ok in still.items())
            + "."
        )
        section = render(info, results, bursts, notes)
        print(section)
        if not args.no_doc:
            write_doc(section)
            print(f"bench: wrote {DOC.relative_to(ROOT)}")
    finally:
        pg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
