"""What a ``postgres_restore`` drill proves about the restored database, and its ``expect`` settings.

Expected tables, row counts against ``expect.row_counts`` and the production database (read-only session,
one repeatable-read read-only transaction), per-table checksums (ordered md5 of the rows on both sides, small
tables only, both sides at once) and SQL assertions. With ``production``, every production table that holds
rows must come back (``table_missing``; ``expect.exclude_tables`` names those a backup may leave out). A
restore with no tables or no rows fails (``restore_empty``) unless production is empty too or, without
production, ``expect.allow_empty`` says so. Which side is which: the backup may lag production (rows added
since the dump are expected), so only a restored count *below* production beyond the tolerance fails
(``row_count_low``; ``table_empty`` when restored empty and production not). A restored count above
production means production lost rows since the backup: a warning (``production_shrank``), never a failure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Severity
from drwatch.core.secrets import redact
from drwatch.validators.base import RunContext
from drwatch.validators.postgres import pgtools
from drwatch.validators.postgres.drill import add_owned_connection, query_limit

Table = tuple[str, str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _table(value: str) -> str:
    pgtools.split_table(value)
    return value


class ChecksumsConfig(_Model):
    tables: list[str] = Field(min_length=1)
    max_rows: int = Field(default=100_000, ge=1)

    @field_validator("tables")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [_table(t) for t in value]


class AssertionExpect(_Model):
    op: Literal["==", "!=", ">", ">=", "<", "<="] = ">="
    value: bool | int | float | str


class AssertionConfig(_Model):
    query: str = Field(min_length=1)
    expect: AssertionExpect
    name: str | None = None


class ExpectConfig(_Model):
    tables: list[str] = Field(default_factory=list)
    row_counts: dict[str, int] = Field(default_factory=dict)
    tolerance: float | str = 0.05  # a fraction of the reference count, or "N rows"
    checksums: ChecksumsConfig | None = None
    assertions: list[AssertionConfig] = Field(default_factory=list)
    # Production tables the backup need not hold (with a production DSN every table with rows is required).
    exclude_tables: list[str] = Field(default_factory=list)
    # A restore with no tables or no rows is a bad backup unless this says an empty database is expected.
    allow_empty: bool = False

    @field_validator("tables", "exclude_tables")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [_table(t) for t in value]

    @field_validator("row_counts")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        for name, n in value.items():
            _table(name)
            if n < 0:
                raise ValueError(f"row count of {name!r} cannot be negative")
        return value

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> float | str:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*rows?\s*", value):
            return value.strip()
        raise ValueError("tolerance is a fraction of the reference count (0.05 = 5%) or a row count ('100 rows')")

    def allowed(self, reference: int) -> float:
        """Rows a count may differ from ``reference`` by."""
        if isinstance(self.tolerance, str):
            return float(re.sub(r"\D", "", self.tolerance))
        return self.tolerance * reference




def _compare(op: str, actual: Any, expected: bool | int | float | str) -> bool:
    if actual is None:
        return False
    if isinstance(expected, bool):
        a: Any = bool(actual)
    elif isinstance(expected, int | float):
        if not isinstance(actual, int | float | Decimal) or isinstance(actual, bool):
            return False
        a = float(actual)
        expected = float(expected)
    else:
        a = str(actual)
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda x, y: x == y, "!=": lambda x, y: x != y, ">": lambda x, y: x > y,
        ">=": lambda x, y: x >= y, "<": lambda x, y: x < y, "<=": lambda x, y: x <= y}
    try:
        return ops[op](a, expected)
    except TypeError:
        return False


class Proof:
    """The checks of one restored database (``params``), findings appended to ``findings``."""

    def __init__(self, ctx: RunContext, exp: ExpectConfig, production: pgtools.DsnRef | None,
                 findings: list[Finding], figures: dict[str, float]) -> None:
        self.ctx = ctx
        self.exp = exp
        self.production = production
        self.findings = findings
        self.figures = figures

    def bad(self, code: str, message: str, subject: str) -> None:
        self.findings.append(Finding(Severity.CRITICAL, code, message, subject))

    async def check(self, params: dict[str, str]) -> Outcome:
        """Every check of the restored database; ``error`` when production could not be compared."""
        ctx, exp = self.ctx, self.exp
        conn = await add_owned_connection(ctx, params, code="restore_target_unavailable", what="restored database",
                                          step="close restored connection", read_only=True,
                                          statement_timeout=max(1.0, ctx.remaining()))
        counts, rows = await pgtools.table_counts(conn, query_limit(ctx))
        self.figures["rows_restored"] = float(rows)
        self.figures["tables_restored"] = float(len(counts))
        excluded = {pgtools.split_table(t) for t in exp.exclude_tables}
        empty = ("the restored database holds no tables" if not counts else
                 f"the restored database holds no rows in its {len(counts)} table(s)") if rows == 0 else None
        listed = self._expected(counts)
        await self._assertions(conn)

        if self.production is None:
            if empty is not None and not exp.allow_empty:
                self.bad("restore_empty", f"{empty}: a dump of an empty or the wrong database, or no dump at all "
                         "(set expect.allow_empty if an empty database is what the backup should hold)", "restore")
            return Outcome.OK
        # Row counts of every restored table (or of the listed ones), plus checksum tables; production's
        # tables with rows that the restore lacks are looked for separately.
        compare = list(listed or counts)
        if exp.checksums is not None:
            compare += [t for t in map(pgtools.split_table, exp.checksums.tables) if t not in compare]
        compare = [t for t in compare if t in counts and t not in excluded]
        try:
            production_rows = await self._production(conn, counts, compare, excluded)
        except ValidatorError as exc:
            self.findings.append(Finding(Severity.WARNING, exc.code, exc.message, "production"))
            return Outcome.ERROR
        if empty is not None and production_rows:
            self.bad("restore_empty", f"{empty}, production has rows: a dump of an empty or the wrong database",
                     "restore")
        return Outcome.OK

    def _expected(self, counts: dict[Table, int]) -> list[Table]:
        """``expect.tables`` and ``expect.row_counts`` against the restored counts; returns the tables listed."""
        exp = self.exp
        listed = [pgtools.split_table(t) for t in exp.tables]
        listed += [t for t in map(pgtools.split_table, exp.row_counts) if t not in listed]
        for table in listed:
            if table not in counts:
                self.bad("table_missing", "expected table is not in the restored database", pgtools.table_label(table))
        for name, n in exp.row_counts.items():
            table = pgtools.split_table(name)
            got = counts.get(table)
            if got is not None and got < n - exp.allowed(n):
                self.bad("row_count_low", f"{got} rows restored, expected at least ~{n}", pgtools.table_label(table))
        return listed

    async def _assertions(self, conn: Any) -> None:
        import asyncpg

        for a in self.exp.assertions:
            label = a.name or a.query[:60]
            try:
                async with conn.transaction(readonly=True):
                    value = await conn.fetchval(a.query, timeout=query_limit(self.ctx))
            except asyncpg.PostgresSyntaxError as exc:
                raise ValidatorError("assertion_invalid", f"assertion {label!r}: {exc}") from None
            except asyncpg.PostgresError as exc:
                self.bad("assertion_failed", f"query failed on the restored database: {exc}", label)
                continue
            if not _compare(a.expect.op, value, a.expect.value):
                self.bad("assertion_failed", f"got {value!r}, expected {a.expect.op} {a.expect.value!r}", label)

    async def _production(self, restored: Any, counts: dict[Table, int], tables: list[Table],
                          excluded: set[Table]) -> bool:
        """Compare with production over a read-only session, in one read-only snapshot: every production
        table with rows (less ``excluded``) must have been restored; ``tables`` are compared by row count
        (and checksum). Returns whether production holds rows in a table that is not excluded."""
        ctx = self.ctx
        assert self.production is not None
        params = await asyncio.to_thread(self.production.params, "production", ctx.config)
        prod = await add_owned_connection(ctx, params, code="production_unavailable", what="production",
                                          step="close production connection", read_only=True,
                                          statement_timeout=max(1.0, min(600.0, ctx.remaining())))
        try:
            async with prod.transaction(readonly=True, isolation="repeatable_read"):
                production_rows = await self._production_tables(prod, counts, excluded)
                for table in tables:
                    await self._compare_table(restored, prod, table, counts[table])
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("production_unavailable", redact(f"production: {type(exc).__name__}: {exc}")) \
                from None
        return production_rows

    async def _production_tables(self, prod: Any, counts: dict[Table, int], excluded: set[Table]) -> bool:
        """Production's tables with rows that the restore lacks are ``table_missing``; tables production's
        role may not read are a warning. Returns whether production holds rows in a table not excluded."""
        limit = query_limit(self.ctx)
        production_rows = False
        unreadable = []
        for table in await pgtools.user_tables(prod, limit):
            if table in excluded:
                continue
            if not await pgtools.can_select(prod, table, limit):
                unreadable.append(pgtools.table_label(table))  # whether it has rows is not known
                continue
            if not await pgtools.has_rows(prod, table, limit):
                continue
            production_rows = True
            label = pgtools.table_label(table)
            if table not in counts and ("table_missing", label) not in {(f.code, f.subject) for f in self.findings}:
                self.bad("table_missing", "production has rows in this table, the backup does not hold it "
                         "(expect.exclude_tables lists tables a backup may leave out)", label)
        if unreadable:
            shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
            self.findings.append(Finding(Severity.WARNING, "production_table_unreadable",
                                         f"production's role may not read {shown}: not required in the backup "
                                         "(GRANT SELECT, or list them in expect.exclude_tables)", "production"))
        return production_rows

    async def _compare_table(self, restored: Any, prod: Any, table: Table, got: int) -> None:
        """One restored table against production: row count, then (if listed and small enough) checksum."""
        exp, ctx = self.exp, self.ctx
        label = pgtools.table_label(table)
        if await prod.fetchval("SELECT to_regclass($1)", pgtools.qualified(table), timeout=query_limit(ctx)) is None:
            self.findings.append(Finding(Severity.WARNING, "production_table_missing",
                                         "table restored from the backup does not exist in production", label))
            return
        live = int(await prod.fetchval(f"SELECT count(*) FROM {pgtools.qualified(table)}", timeout=query_limit(ctx)))
        if got == 0 and live > 0:
            self.bad("table_empty", f"restored empty, production has {live} rows", label)
        elif got < live - exp.allowed(live):
            self.bad("row_count_low", f"{got} rows restored, production has {live}", label)
        elif got > live + exp.allowed(live):
            self.findings.append(Finding(Severity.WARNING, "production_shrank",
                                         f"the backup holds {got} rows, production only {live}: rows were "
                                         "deleted in production since the backup", label))
        sums = {pgtools.split_table(t) for t in (exp.checksums.tables if exp.checksums else [])}
        if table not in sums or exp.checksums is None:
            return
        if max(got, live) > exp.checksums.max_rows:
            self.findings.append(Finding(Severity.INFO, "checksum_skipped",
                                         f"more than {exp.checksums.max_rows} rows", label))
            return
        # Both sides at once (two servers, two connections): the slower one sets the time.
        keys = await pgtools.primary_key(restored, table, query_limit(ctx))
        ours, theirs = await _both(pgtools.table_checksum(restored, table, query_limit(ctx), keys=keys),
                                   pgtools.table_checksum(prod, table, query_limit(ctx), keys=keys))
        if ours != theirs:
            self.bad("checksum_mismatch", "the restored rows differ from production's", label)


async def _both(first: Awaitable[str], second: Awaitable[str]) -> tuple[str, str]:
    """Run two queries concurrently; when one fails (or the run is cancelled) the other is cancelled and
    awaited before the error propagates: nothing is left running on a connection."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        a, b = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return a, b
