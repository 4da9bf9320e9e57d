"""PostgreSQL tooling for restore drills: the tools' environment and where the binaries are, DSNs (libpq
environment, asyncpg), read-only connections, and what a database holds.

Tools run through :func:`drwatch.core.subprocesses.run_tool` (own process group, time limit, killed and
reaped on timeout or cancellation). See also :mod:`drwatch.validators.postgres.pgdump` (dumps),
:mod:`drwatch.validators.postgres.pgcluster` (throwaway clusters) and
:mod:`drwatch.validators.postgres.drill` (the database a drill restores into).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, model_validator

from drwatch.core.errors import ConfigError, ValidatorError
from drwatch.core.secrets import read_secret, redact, register_dsn_password
from drwatch.core.subprocesses import run_tool, unwind


class _BaseDir(Protocol):
    """Where relative secret paths resolve (the configuration, :class:`drwatch.validators.base.ConfigView`)."""

    @property
    def base_dir(self) -> Path: ...


DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


# --- tool environment and binaries ----------------------------------------------------------------


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: no inherited PG* variables, C locale, bounded connection attempts."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
           "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "drwatch"}
    env.update(extra or {})
    return env


def _version_key(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in path.name.split("."))
    except ValueError:
        return (-1,)


def find_bin_dir(configured: str | None, needed: Sequence[str]) -> Path:
    """Where the PostgreSQL tools are: ``configured``; else PATH (the directory of the first needed
    tool, when it holds them all); else the newest ``/usr/lib/postgresql/*/bin``. Blocking (stat only)."""
    if configured:
        path = Path(configured).expanduser()
        missing = [t for t in needed if not (path / t).is_file()]
        if missing:
            raise ValidatorError("tools_missing", f"sandbox.bin_dir {path} lacks {', '.join(missing)}")
        return path
    found = shutil.which(needed[0])
    if found and all(shutil.which(t, path=str(Path(found).parent)) for t in needed):
        return Path(found).parent
    if DEBIAN_PG_ROOT.is_dir():
        dirs = [d / "bin" for d in DEBIAN_PG_ROOT.iterdir() if all((d / "bin" / t).is_file() for t in needed)]
        if dirs:
            return max(dirs, key=lambda b: _version_key(b.parent))
    raise ValidatorError("tools_missing", f"PostgreSQL tools not found ({', '.join(needed)}): install them or set "
                                          "sandbox.bin_dir")


async def tool_major(bin_dir: Path, tool: str) -> int:
    """The major version of ``bin_dir/tool`` (``--version``)."""
    res = await run_tool([str(bin_dir / tool), "--version"], env=tool_env(), limit=30)
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", res.stdout)
    if res.returncode != 0 or m is None:
        raise ValidatorError("tools_missing", f"{bin_dir / tool} --version failed: {res.stderr.strip()[:200]}")
    return int(m.group(1))


# --- identifiers and DSNs ---------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def split_table(name: str) -> tuple[str, str]:
    """``schema.table`` (default schema ``public``); unquoted parts fold to lower case, as PostgreSQL does."""
    parts: list[str] = []
    for m in re.finditer(r'"((?:[^"]|"")*)"|([^."]+)', name):
        parts.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2).strip().lower())
    if len(parts) == 1:
        return "public", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"invalid table name {name!r}: use table or schema.table")


def qualified(table: tuple[str, str]) -> str:
    return f"{quote_ident(table[0])}.{quote_ident(table[1])}"


def table_label(table: tuple[str, str]) -> str:
    return table[1] if table[0] == "public" else f"{table[0]}.{table[1]}"


_LIBPQ_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
    "password": "PGPASSWORD", "passfile": "PGPASSFILE", "service": "PGSERVICE", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "sslmode": "PGSSLMODE", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT", "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING", "krbsrvname": "PGKRBSRVNAME", "requiressl": "PGREQUIRESSL",
}
_ASYNCPG_PARAMS = frozenset({"host", "port", "dbname", "user", "password", "passfile", "sslmode", "sslcert",
                             "sslkey", "sslrootcert", "sslcrl", "target_session_attrs", "krbsrvname", "service"})
_KV = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*)")


def parse_dsn(dsn: str) -> dict[str, str]:
    """A libpq DSN (``postgresql://`` URL or ``key=value`` words) as connection parameters."""
    params: dict[str, str] = {}
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        if userinfo:
            user, sep, password = userinfo.partition(":")
            params["user"] = unquote(user)
            if sep:
                params["password"] = unquote(password)
        hosts, ports = [], []
        for item in filter(None, hostlist.split(",")):
            m = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", item)
            host, port = (m.group(1), m.group(2) or "") if m else (item, "")
            hosts.append(unquote(host.strip("[]")))
            ports.append(port)
        if any(hosts):
            params["host"] = ",".join(hosts)
        if any(ports):
            params["port"] = ",".join(ports)
        if parts.path.strip("/"):
            params["dbname"] = unquote(parts.path.lstrip("/"))
        for item in filter(None, parts.query.split("&")):
            key, _, value = item.partition("=")
            params["dbname" if key == "database" else unquote(key)] = unquote(value)
    else:
        pos = 0
        text = dsn.strip()
        while pos < len(text):
            m = _KV.match(text, pos)
            if m is None:
                raise ValueError("malformed connection string (expected key=value words or a postgresql:// URL)")
            value = m.group(2)
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[m.group(1).lower()] = value
            pos = m.end()
    unknown = sorted(set(params) - set(_LIBPQ_ENV))
    if unknown:
        raise ValueError(f"unsupported connection parameter(s): {', '.join(unknown)}")
    if any(not p.isdigit() or not 0 < int(p) < 65536 for p in params.get("port", "").split(",") if p):
        raise ValueError("port must be a number between 1 and 65535")
    if any(":" in h and not h.count(":") > 1 for h in params.get("host", "").split(",")):
        raise ValueError("malformed host:port (the port must be a number)")
    return params


def libpq_env(params: Mapping[str, str], dbname: str | None = None) -> dict[str, str]:
    """Environment for libpq tools (pg_restore, psql): secrets never on the command line."""
    env = tool_env({_LIBPQ_ENV[k]: v for k, v in params.items()})
    if dbname is not None:
        env["PGDATABASE"] = dbname
    return env


def asyncpg_dsn(params: Mapping[str, str]) -> str:
    """The same parameters as a URL asyncpg understands (query parameters only; no settings)."""
    keep = {k: v for k, v in params.items() if k in _ASYNCPG_PARAMS and k != "dbname"}
    if "hostaddr" in params and "host" not in params:
        keep["host"] = params["hostaddr"]
    path = "/" + quote(params["dbname"], safe="") if params.get("dbname") else ""
    return f"postgresql://{path}?" + urlencode(keep, quote_via=quote)


class DsnRef(BaseModel):
    """Where a DSN is: ``dsn_env`` (an environment variable) or ``dsn_file``; never inline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn_env: str | None = None
    dsn_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> DsnRef:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env (environment variable) or dsn_file (file path)")
        return self

    def params(self, field: str, cfg: _BaseDir) -> dict[str, str]:
        try:
            dsn = read_secret(field, env=self.dsn_env, file=self.dsn_file, base_dir=cfg.base_dir)
        except ConfigError as exc:
            raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None
        register_dsn_password(dsn)
        try:
            return parse_dsn(dsn)
        except ValueError as exc:
            raise ValidatorError("dsn_invalid", f"{field}: {exc}") from None


# --- connections ------------------------------------------------------------------------------------

_SETTINGS = {  # identical text output on both sides of a checksum comparison
    "application_name": "drwatch", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "TimeZone": "UTC",
    "extra_float_digits": "3", "bytea_output": "hex", "lc_monetary": "C",
}
if TYPE_CHECKING:
    import asyncpg

    _ConnectErrors = tuple[type[OSError], type[TimeoutError], type[asyncpg.PostgresError],
                           type[asyncpg.InterfaceError]]
    CONNECT_ERRORS: _ConnectErrors


def connect_errors() -> _ConnectErrors:
    """What a failing connection raises. asyncpg is imported on first use (module ``__getattr__`` serves
    ``CONNECT_ERRORS``): it costs start-up that a ``check`` of filesystem assets never needs
    (tests/test_startup.py keeps it out)."""
    import asyncpg

    return (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def __getattr__(name: str) -> Any:
    if name == "CONNECT_ERRORS":
        return connect_errors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def connect(params: Mapping[str, str], *, code: str, what: str, database: str | None = None,
                  read_only: bool = False, statement_timeout: float = 300.0, connect_limit: float = 10.0) -> Any:
    """An asyncpg connection; ``read_only`` sessions refuse every write (``default_transaction_read_only``).

    Connection failures raise ValidatorError(code): the server could not be checked, never a bad backup.
    """
    settings = {**_SETTINGS, "statement_timeout": str(int(statement_timeout * 1000)), "lock_timeout": "10000",
                "idle_in_transaction_session_timeout": "600000"}
    if read_only:
        settings["default_transaction_read_only"] = "on"
    import asyncpg

    attempt = asyncio.ensure_future(asyncpg.connect(asyncpg_dsn(params), database=database, timeout=connect_limit,
                                                    server_settings=settings, statement_cache_size=0))
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        # asyncpg cancelled inside its connect (the socket just opened) leaves a future of its own to fail later,
        # never retrieved ("unexpected connection_lost() call", logged as an error): the attempt is let finish
        # (briefly: a local handshake takes milliseconds) and what it opened is closed, then the run stops.
        await unwind(_discard(attempt), CONNECT_CANCEL_GRACE)
        raise
    except connect_errors() as exc:
        raise ValidatorError(code, redact(f"{what}: cannot connect ({type(exc).__name__}: {exc})")) from None


CONNECT_CANCEL_GRACE = 2.0


async def _discard(attempt: asyncio.Future[Any]) -> None:
    """Wait for a connection attempt nobody wants any more (cancelled past the grace) and close its connection."""
    try:
        conn = await asyncio.wait_for(attempt, CONNECT_CANCEL_GRACE)
    except BaseException:  # failed, timed out or cancelled: nothing opened to close
        return
    conn.terminate()


async def close_connection(conn: Any) -> None:
    """Close gracefully (bounded), else terminate: a cleanup never hangs on a dead server."""
    try:
        await unwind(conn.close(timeout=5), 6)
    except connect_errors():
        conn.terminate()
    finally:
        if not conn.is_closed():
            conn.terminate()


# --- contents of a database --------------------------------------------------------------------

_TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind = 'r' AS leaf
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
ORDER BY 1, 2
"""
_PK_SQL = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = $1::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


_COUNT_BATCH = 100  # tables counted per statement (one round trip; PostgreSQL may scan them in parallel)


async def table_counts(conn: Any, limit: float) -> tuple[dict[tuple[str, str], int], int]:
    """Rows per user table (and partitioned parent), and the total over leaf tables (no double counting)."""
    tables = [((str(r["schema"]), str(r["name"])), bool(r["leaf"]))
              for r in await conn.fetch(_TABLES_SQL, timeout=limit)]
    found: dict[int, int] = {}
    for start in range(0, len(tables), _COUNT_BATCH):
        sql = " UNION ALL ".join(f"SELECT {i} AS i, count(*) AS n FROM {qualified(t)}"
                                 for i, (t, _leaf) in enumerate(tables[start:start + _COUNT_BATCH], start))
        found.update((int(r["i"]), int(r["n"])) for r in await conn.fetch(sql, timeout=limit))
    counts = {t: found[i] for i, (t, _leaf) in enumerate(tables)}
    return counts, sum(found[i] for i, (_t, leaf) in enumerate(tables) if leaf)


async def user_tables(conn: Any, limit: float) -> list[tuple[str, str]]:
    """User tables (and partitioned parents) of the database, in name order."""
    return [(str(r["schema"]), str(r["name"])) for r in await conn.fetch(_TABLES_SQL, timeout=limit)]


async def can_select(conn: Any, table: tuple[str, str], limit: float) -> bool:
    """Whether this session's role may read the table (so a count or a row check will not be refused)."""
    return bool(await conn.fetchval("SELECT has_table_privilege($1, 'SELECT')", qualified(table), timeout=limit))


async def has_rows(conn: Any, table: tuple[str, str], limit: float) -> bool:
    """Whether the table holds at least one row (reads one row, whatever the table's size)."""
    return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {qualified(table)})", timeout=limit))


async def primary_key(conn: Any, table: tuple[str, str], limit: float) -> list[str]:
    """The table's primary-key columns, in key order (empty without one)."""
    return [str(r[0]) for r in await conn.fetch(_PK_SQL, qualified(table), timeout=limit)]


async def table_checksum(conn: Any, table: tuple[str, str], limit: float, keys_from: Any | None = None,
                         keys: list[str] | None = None) -> str:
    """Ordered md5 of the table's rows (row text md5s, in primary-key order; full row text without one).
    The order comes from ``keys`` when given, else from the primary key read on ``keys_from`` (or ``conn``)."""
    q = qualified(table)
    if keys is None:
        keys = await primary_key(keys_from or conn, table, limit)
    order = ", ".join(f"t.{quote_ident(k)}" for k in keys) if keys else 't::text COLLATE "C"'
    value = await conn.fetchval(f"SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY {order}), '')) "
                                f"FROM {q} AS t", timeout=limit)
    return str(value)
