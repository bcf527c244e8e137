"""Timing helpers for the benchmarks: child processes timed with os.wait4, ABAB alternation, medians.

Other jobs share this machine, so every comparison runs its contenders alternately in one loop
(A B A B ...): a burst of load then slows both alike, and the medians stay comparable. Peak memory
is the child's ``ru_maxrss`` from ``os.wait4`` (no extra dependency).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
HANDOVER = str(BIN / "handover")
PYTHON = sys.executable
PASSPHRASE = "bench passphrase (not a secret)"
KDBX_PASSWORD = "bench-kdbx"

# A private runtime dir with a short path: an AF_UNIX socket path must stay under 108 bytes.
RUNTIME = Path(tempfile.gettempdir()) / f"hvbench-{os.getuid()}"
NEUTRAL_CWD = Path(tempfile.gettempdir())
STATE = RUNTIME / "state"


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every child: no HANDOVER_* from the caller, the floor KDF, our runtime dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    # The out-of-file heads (vault/integrity/statehead.py) of the bench's vaults, apart from the user's own.
    env.update(
        HANDOVER_KDF="minimum", HANDOVER_RUNTIME_DIR=str(RUNTIME), NO_COLOR="1", XDG_STATE_HOME=str(STATE)
    )
    env.update(extra)
    return env


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a technician with a home of their own: no HANDOVER_*, XDG_* or libpq
    variable from the caller, every XDG folder and the runtime dir under ``home``, the floor KDF."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HANDOVER_", "XDG_", "PG")) and k not in ("HOME", "VIRTUAL_ENV")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        HANDOVER_RUNTIME_DIR=str(home / "rt"),
        HANDOVER_KDF="minimum",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SystemExit(f"bench: {program} is not installed")
    return path


@dataclass
class Cmd:
    """One contender: a command line, its environment and stdin, and untimed set-up per run."""

    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=base_env)
    stdin: bytes | None = None
    setup: Callable[[], None] | None = None
    cwd: Path | None = None

    def shell(self) -> str:
        """The command as one would type it: the variables that matter in front, secrets elided."""
        shown = []
        for k, v in self.env.items():
            if k in ("HANDOVER_RUNTIME_DIR", "HANDOVER_KDF") or not k.startswith(
                ("HANDOVER_", "_HANDOVER", "COMP_")
            ):
                continue
            secret = "SESSION" in k or "PASSPHRASE" in k
            shown.append(f"{k}={'…' if secret else _quote(_short_path(v))}")
        argv = [Path(self.argv[0]).name, *(_short_path(a) for a in self.argv[1:])]
        prefix = "printf … | " if self.stdin else ""
        return prefix + " ".join([*shown, *(_quote(a) for a in argv)])


def _short_path(arg: str) -> str:
    for base, name in ((str(DATA), "bench/data"), (str(RUNTIME), "$RUNTIME")):
        if arg.startswith(base):
            return name + arg[len(base) :]
    return arg


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


@dataclass
class Run:
    seconds: float
    maxrss_kib: int
    status: int


class _Runner:
    """The small forking process of bench/runner.py, started on first use."""

    proc: subprocess.Popen[str] | None = None

    @classmethod
    def ask(cls, request: dict[str, Any]) -> dict[str, Any]:
        if cls.proc is None or cls.proc.poll() is not None:
            runner = str(Path(__file__).with_name("runner.py"))
            cls.proc = subprocess.Popen(
                [PYTHON, "-I", "-S", runner], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        assert cls.proc.stdin is not None and cls.proc.stdout is not None
        cls.proc.stdin.write(json.dumps(request) + "\n")
        cls.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(cls.proc.stdout.readline())
        return answer


def run_once(cmd: Cmd) -> Run:
    """Run ``cmd`` once: wall time from fork to reap, and its own peak RSS (see bench/runner.py)."""
    if cmd.setup is not None:
        cmd.setup()
    with tempfile.TemporaryDirectory(prefix="hvb-run-") as tmp:
        stdin = None
        if cmd.stdin is not None:
            stdin = os.path.join(tmp, "stdin")
            Path(stdin).write_bytes(cmd.stdin)
        err = os.path.join(tmp, "stderr")
        argv = [shutil.which(cmd.argv[0]) or cmd.argv[0], *cmd.argv[1:]]
        # A neutral working directory: `python -m cli.agent` (started by unlock) puts its cwd first
        # on sys.path, and from the repository root that would shadow a PYTHONPATH tree (--tag).
        cwd = str(cmd.cwd or NEUTRAL_CWD)
        request = {"argv": argv, "env": cmd.env, "cwd": cwd, "stdin": stdin, "stderr": err}
        answer = _Runner.ask(request)
        if answer["status"] != 0:
            text = Path(err).read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"bench: {cmd.label} failed ({answer['status']}): {cmd.shell()}\n{text}")
    return Run(answer["seconds"], int(answer["maxrss_kib"]), answer["status"])


@dataclass
class Series:
    label: str
    shell: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_mib(self) -> float:
        return max(r.maxrss_kib for r in self.runs) / 1024

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "command": self.shell,
            "median_s": self.median,
            "runs_s": [r.seconds for r in self.runs],
            "peak_rss_mib": self.peak_mib,
        }


def alternate(cmds: Sequence[Cmd], rounds: int, warmup: int = 1) -> list[Series]:
    """Run the contenders A B A B ... ``rounds`` times each (after ``warmup`` untimed rounds)."""
    series = [Series(c.label, c.shell()) for c in cmds]
    for r in range(warmup + rounds):
        for cmd, s in zip(cmds, series, strict=True):
            run = run_once(cmd)
            if r >= warmup:
                s.runs.append(run)
    return series


def alternate_calls(
    calls: Sequence[tuple[str, Callable[[], Any]]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """The same alternation for in-process callables (timed with perf_counter)."""
    times: dict[str, list[float]] = {name: [] for name, _ in calls}
    for r in range(warmup + rounds):
        for name, fn in calls:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def machine() -> dict[str, str]:
    """CPU model, cores, memory, kernel, and the versions of everything compared."""
    import platform
    import sqlite3
    from importlib.metadata import version

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    pkgs = ", ".join(
        f"{name} {version(name)}" for name in ("cryptography", "SQLAlchemy", "pyrage", "pykeepass", "click")
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "packages": pkgs,
        "handover": version_of([HANDOVER, "--version"]),
        "keepassxc-cli": version_of(["keepassxc-cli", "--version"]),
        "age": version_of(["age", "--version"]),
    }
