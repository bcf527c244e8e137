"""Shared fixtures: a fast KDF, a private runtime dir, and a vault made through the real library.

The KDF is lowered through one hook (``HANDOVER_KDF=minimum``: OWASP's floor, never below it);
tests/test_keys.py keeps one test at the real cost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.pgserver import PgServer, find_bin_dir

PASSPHRASE = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOVER_KDF", "minimum")
    monkeypatch.setenv("HANDOVER_RUNTIME_DIR", str(tmp_path / "runtime"))
    # The out-of-file head of each vault (vault/integrity/statehead.py) lives in the user state dir: one per
    # test, so that no test sees another's vaults (or the user's own), and subprocesses inherit it.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    # The default vault, the member key and any config live in the user's data and config dirs: the
    # test's own too, so no test touches the user's (or, under pytest-xdist, another worker's).
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in (
        "HANDOVER_PASSPHRASE",
        "HANDOVER_SESSION",
        "HANDOVER_PASSPHRASE_FILE",
        "HANDOVER_PASSPHRASE_COMMAND",
        "HANDOVER_VAULT",
        "HANDOVER_DB_URL",
        "HANDOVER_NEW_PASSPHRASE",
        "HANDOVER_RECOVERY_CODE",
        "HANDOVER_BUNDLE_PASSPHRASE",
        "HANDOVER_IMPORT_PASSPHRASE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return tmp_path / "vault.db"


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``engines`` run once per engine (DESIGN §12) when they use a vault through the
    library or the command line only. A test that asks for ``vault_path`` itself reaches into the
    SQLite file (raw SQL, bytes on disk): it runs on SQLite alone, as does one marked
    ``sqlite_only`` (pragmas, SQLite's own locks)."""
    marked = metafunc.definition.get_closest_marker("engines")
    if "vault_target" not in metafunc.fixturenames or not marked:
        return
    if metafunc.definition.get_closest_marker("sqlite_only"):
        return
    if "vault_path" in metafunc.definition._fixtureinfo.argnames:
        return
    metafunc.parametrize("vault_target", ENGINES, indirect=True)


@pytest.fixture
def vault_target(request: pytest.FixtureRequest, vault_path: Path) -> Path | str:
    """Where the test's vault lives: the SQLite file ``vault_path``, or (in the ``postgresql`` run
    of a test marked ``engines``) a fresh database on the session's throwaway server."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return vault_path
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def new_vault(vault_target: Path | str) -> Iterator[tuple]:
    """(Vault, recovery code) for a fresh vault at the floor KDF cost."""
    from handover_vault import init_vault

    v, code = init_vault(vault_target, PASSPHRASE)
    try:
        yield v, code
    finally:
        v.close()


@pytest.fixture
def v(new_vault: tuple):
    return new_vault[0]


@pytest.fixture
def acme(v):
    """A vault holding one realistic client."""
    v.clients.add("acme", name="ACME Ltd", contract_start="2024-01-01", notice_days=30)
    v.contacts.add("acme", name="Jane Doe", role="Office manager", email="jane@acme.example", authorized=True)
    v.docs.add("acme", title="Network overview", body="# LAN\n\n10.0.0.0/24 behind fw1", overview=True)
    v.creds.add(
        "acme",
        label="Firewall admin",
        username="admin",
        secret="Fw-s3cret-0001",
        category="firewall",
        url="https://fw1.acme.example",
    )
    v.assets.add("acme", hostname="fw1", kind="firewall", ip="10.0.0.1", expires="2027-03-01")
    v.issues.add(
        "acme", title="Backups untested", severity="high", risk="data loss", workaround="test monthly"
    )
    return v


def unavailable(why: str, in_ci: str) -> NoReturn:
    """Skip a test this machine cannot run; in CI (CI=true), fail it instead with ``in_ci``:
    nothing may skip there, so a missing tool or privilege cannot hide a missing feature."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}: {in_ci}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the whole session (tests/pgserver.py: under pytest-xdist,
    one per worker, each on its own port and temp dir), removed at the end even when tests fail.
    Missing PostgreSQL goes through :func:`unavailable` (a failure in CI)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL (initdb, pg_ctl) is not installed on this machine", ".ci/run must install it")
    server = PgServer.start(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A SQLAlchemy URL to a fresh empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)


def need(tool: str) -> str:
    """The path of an outside program. Missing in CI is a failure: interop tests never skip there."""
    path = shutil.which(tool)
    if path:
        return path
    unavailable(f"{tool} is not installed on this machine", ".ci/run must install it")


def cli_env(vault: Path | str | None, passphrase: str | None, env: dict[str, str] | None) -> dict[str, str]:
    """The environment a test gives a command: this process's, minus any HANDOVER_ variable,
    plus the fast KDF, the test's runtime dir, the vault (a file, or a database URL as
    HANDOVER_DB_URL), the passphrase and ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    full_env["HANDOVER_KDF"] = os.environ.get("HANDOVER_KDF", "minimum")
    full_env["HANDOVER_RUNTIME_DIR"] = os.environ["HANDOVER_RUNTIME_DIR"]
    full_env["XDG_STATE_HOME"] = os.environ["XDG_STATE_HOME"]
    if isinstance(vault, str) and "://" in vault:
        full_env["HANDOVER_DB_URL"] = vault
    elif vault is not None:
        full_env["HANDOVER_VAULT"] = str(vault)
    if passphrase is not None:
        full_env["HANDOVER_PASSPHRASE"] = passphrase
    full_env.update(env or {})
    return full_env


def handover_cmd() -> list[str]:
    """The installed console script when present, else the module (same code path)."""
    exe = shutil.which("handover", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "handover_vault.cli.main"]


def run(
    args: list[str],
    vault: Path | str | None = None,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    passphrase: str | None = PASSPHRASE,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``handover`` in a subprocess with no TTY, as a script would."""
    full_env = cli_env(vault, passphrase, env)
    data = input.decode() if isinstance(input, bytes) else input
    return subprocess.run(
        handover_cmd() + args,
        input=data if data is not None else "",
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
