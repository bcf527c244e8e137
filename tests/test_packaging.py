"""The distribution installs under its own name: no generic top-level package lands in site-packages.

The repository keeps the folders the design asks for (vault/, cli/, migrations/); pyproject.toml's
package-dir maps them to handover_vault, handover_vault.cli and handover_vault.migrations. A wheel
that shipped a top-level ``cli`` or ``migrations`` would overwrite, or be overwritten by, any other
distribution with a package of that name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("vault", "cli", "migrations"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("handover_vault-*.whl")
    return wheel


def test_the_wheel_has_one_top_level_name(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"handover_vault"}
    # Everything the program needs at run time is inside it: the CLI, the Alembic environment with
    # every migration, the letter template.
    for member in (
        "handover_vault/cli/main.py",
        "handover_vault/cli/agent.py",
        "handover_vault/migrations/env.py",
        "handover_vault/migrations/versions/0001_baseline.py",
        "handover_vault/templates/letter.md",
    ):
        assert member in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "handover = handover_vault.cli.fast:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_the_generic_names_do_not_import(tmp_path: Path) -> None:
    """In a fresh virtualenv after ``pip install`` of the wheel: handover works, ``import cli`` fails."""
    wheel = build_wheel(tmp_path)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import importlib, sys\n"
        "for name in ('cli', 'migrations', 'vault'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    sys.exit(f'{name} imported')\n"
        "import handover_vault.cli.main, handover_vault.migrations\n"
        "print(handover_vault.cli.main.__file__)\n"
    )
    # -I: no current folder on sys.path (the checkout has folders of those names), no PYTHONPATH.
    r = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n" + probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.strip().startswith(str(target))
