"""Durable history of results: SQLite (default) or PostgreSQL (asyncpg)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drwatch.store.base import Store, StoredState, ValidatorStats

if TYPE_CHECKING:
    from drwatch.config.model import Config

__all__ = ["Store", "StoredState", "ValidatorStats", "open_store"]


def open_store(cfg: Config) -> Store:
    """The store backend the config asks for (not yet opened)."""
    if cfg.store.postgres is not None:
        from drwatch.core.secrets import read_secret, register_dsn_password
        from drwatch.store.postgres import PostgresStore

        pg = cfg.store.postgres
        dsn = read_secret("store.postgres", env=pg.dsn_env, file=pg.dsn_file, base_dir=cfg.base_dir)
        register_dsn_password(dsn)
        return PostgresStore(dsn, pool_max=pg.pool_max, connect_timeout=pg.connect_timeout.total_seconds())
    from drwatch.store.sqlite import SqliteStore

    return SqliteStore(cfg.sqlite_path())
