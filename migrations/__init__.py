"""Alembic environment of the vault schema, shipped inside the installed package.

The vault runs these migrations itself at open time (``vault.store.engine.ensure_schema``); nobody needs an
``alembic.ini`` or the ``alembic`` command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def alembic_config(connection: Any) -> Any:
    """An Alembic Config pointing at this package, bound to an open SQLAlchemy connection."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg
