"""Reading a Terraform state (a local file or an S3 object, never written) and judging it: its content, its
lineage and serial against the previous stored result, its age and the regions its resources live in."""

from __future__ import annotations

import asyncio
import json
import os
import re
import zlib
from typing import Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Severity
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.s3 import S3Location, S3Missing, classify
from drwatch.validators.base import RunContext
from drwatch.validators.copies.posture import arn_region
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.terraform.config import TerraformStateConfig, path_in

STATE_VERSION = 4
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_AZ = re.compile(r"^([a-z]{2}(-gov)?-[a-z]+-\d)[a-z]$")
_MAX_BYTES = 512 * 1024 * 1024


def described_regions(state: dict[str, Any]) -> set[str]:
    """The regions the state's resources live in: ARNs, ``region`` and ``availability_zone`` attributes."""
    found: set[str] = set()

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, name)
        elif isinstance(value, str):
            if value.startswith("arn:"):
                if (r := arn_region(value)) is not None and _REGION.match(r):
                    found.add(r)
            elif name == "region" and _REGION.match(value):
                found.add(value)
            elif name == "availability_zone" and (m := _AZ.match(value)):
                found.add(m.group(1))

    for res in state.get("resources") or []:
        if isinstance(res, dict):
            for inst in res.get("instances") or []:
                if isinstance(inst, dict):
                    walk(inst.get("attributes"), "")
    return found


class StateRun:
    """One run's findings and figures, and the steps that read and judge the state."""

    def __init__(self, cfg: TerraformStateConfig, ctx: RunContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.findings: list[Finding] = []
        self.figures: dict[str, float] = {}
        self.failed = False
        self.region_severity = Severity.CRITICAL if cfg.region_policy == "failure" else Severity.WARNING

    def critical(self, code: str, message: str, subject: str = "state") -> None:
        self.failed = True
        self.findings.append(Finding(Severity.CRITICAL, code, message, subject))

    def note(self, severity: Severity, code: str, message: str, subject: str = "state") -> None:
        self.failed |= severity == Severity.CRITICAL
        self.findings.append(Finding(severity, code, message, subject))

    # --- reading ------------------------------------------------------------------------------------

    async def read_file(self, loc: FilesystemLocationConfig) -> tuple[bytes, float] | None:
        root = self.ctx.config.resolve_path(loc.path)
        path = root / path_in(self.ctx.asset.production.prefix, self.cfg.key)

        def read() -> tuple[bytes, float] | str:
            if not root.is_dir():
                raise ValidatorError("location_unavailable", f"the location directory {str(root)!r} is not there "
                                     "(not mounted?)")
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    if st.st_size > _MAX_BYTES:
                        return f"the state is {st.st_size} bytes (over {_MAX_BYTES})"
                    return fh.read(), st.st_mtime
            except FileNotFoundError:
                return "missing"
            except IsADirectoryError:
                return "a directory, not a file"
            except PermissionError as exc:
                raise ValidatorError("access_denied", f"cannot read {str(path)!r}: {exc.strerror}") from None
            except OSError as exc:
                raise ValidatorError("location_unavailable", f"cannot read {str(path)!r}: {exc.strerror or exc}"
                                     ) from None

        got = await asyncio.to_thread(read)
        if isinstance(got, str):
            self.critical("state_missing" if got == "missing" else "state_unreadable",
                          f"the state file {str(path)!r} is {got}" if got != "missing"
                          else f"no state file at {str(path)!r}")
            return None
        return got

    async def read_s3(self, s3: S3Location, key: str) -> tuple[bytes, float] | None:
        client = await s3.client()
        try:
            resp = await client.get_object(Bucket=s3.cfg.bucket, Key=key)
            size = int(resp.get("ContentLength") or 0)
            if size > _MAX_BYTES:
                resp["Body"].close()
                self.critical("state_unreadable", f"the state is {size} bytes (over {_MAX_BYTES})")
                return None
            async with resp["Body"] as stream:
                body = await stream.read()
        except Exception as exc:
            mapped = classify(exc, s3.name)
            if isinstance(mapped, S3Missing):
                self.critical("state_missing", f"no state object s3://{s3.cfg.bucket}/{key} ({mapped.what})")
                return None
            raise mapped from None
        return bytes(body), resp["LastModified"].timestamp()

    # --- judging ------------------------------------------------------------------------------------

    def parse(self, body: bytes) -> dict[str, Any] | None:
        if body[:2] == b"\x1f\x8b":  # a gzip-compressed copy of the state (a backup job's choice): read through it
            body, damaged = _gunzip(body)
            if damaged:
                self.critical("state_invalid", damaged)
                return None
        try:
            state = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            what = "valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "valid JSON"
            self.critical("state_invalid", f"the state is not {what}: {str(exc)[:160]}")
            return None
        if not isinstance(state, dict):
            self.critical("state_invalid", "the state is not a JSON object")
            return None
        if "encrypted_data" in state:  # a valid state drwatch cannot read: could not check, not a bad backup
            raise ValidatorError("state_encrypted", _version_problem(state, state.get("version")))
        version = state.get("version")
        if version != STATE_VERSION:
            self.critical("state_version", _version_problem(state, version))
            return None
        serial, lineage = state.get("serial"), state.get("lineage")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            self.critical("state_invalid", f"the state's serial {serial!r} is not a non-negative integer")
            return None
        if not isinstance(lineage, str) or not lineage.strip():
            self.critical("state_invalid", f"the state's lineage {lineage!r} is empty or not a string")
            return None
        if not isinstance(state.get("resources", []), list):
            self.critical("state_invalid", "the state's resources are not a list")
            return None
        return state

    def previous(self) -> tuple[str, float] | None:
        """The lineage and serial this validator's previous stored result saw (or carried forward)."""
        if self.ctx.results is None:
            return None
        prev = self.ctx.results().last_result(self.ctx.asset_name, self.cfg.label)
        if prev is None:
            return None
        old = next((f.subject for f in prev.findings if f.code == "state_lineage"), None)
        old_serial = prev.figures.get("serial")
        return None if old is None or old_serial is None else (old, old_serial)

    def carry(self, reference: tuple[str, float] | None) -> None:
        """A run that read no state keeps the previous reference in its result (the next run compares with it)."""
        if reference is not None and "serial" not in self.figures:
            old, old_serial = reference
            self.figures["serial"] = old_serial
            self.findings.append(Finding(Severity.INFO, "state_lineage", f"lineage {old}, serial "
                                         f"{int(old_serial)} (seen before; not read by this run)", old))

    def history(self, serial: int, lineage: str, reference: tuple[str, float] | None) -> None:
        """Lineage stable and serial never decreasing, against this validator's previous stored result."""
        self.figures["serial"] = float(serial)
        self.findings.append(Finding(Severity.INFO, "state_lineage", f"lineage {lineage}, serial {serial}",
                                     lineage))
        if reference is None:
            return
        old, old_serial = reference
        if old != lineage:
            self.critical("lineage_changed", f"the state's lineage is {lineage}, the previous run saw {old}: the "
                          "state was replaced by another one (a different workspace, or a new 'terraform init')")
        elif serial < old_serial:
            self.critical("serial_went_back", f"the state's serial is {serial}, the previous run saw "
                          f"{int(old_serial)}: an older state was written over the newer one")

    def age(self, mtime: float, subject: str) -> None:
        future = FutureTimes.at(self.ctx)
        if not future.believe(subject, mtime):
            warning = future.finding("state", "state object(s)")
            assert warning is not None
            self.findings.append(warning)
            self.critical("stale", "the state has no believable modification time (dated ahead of this host's "
                          "clock)")
            return
        self.figures["last_modified_timestamp_seconds"] = mtime
        limit = (self.cfg.within or self.ctx.asset.rpo).total_seconds()
        age = self.ctx.clock() - mtime
        if age > limit:
            self.critical("stale", f"the state was last written {format_duration(age)} ago (limit "
                          f"{format_duration(limit)})")

    def regions(self, state: dict[str, Any], state_region: str, copy_regions: dict[str, str | None]) -> None:
        """The state's own region and its copies' against the regions it describes. A copy whose region could not
        be read (None) may be the one outside: with none known outside, that is ``region_unknown`` (the run could
        not check), never ``no_copy_outside_region``."""
        described = described_regions(state)
        self.figures["regions_described"] = float(len(described))
        if not described:
            return
        names = ", ".join(sorted(described))
        if state_region and state_region in described:
            self.note(self.region_severity, "state_in_rebuilt_region",
                      f"the state is stored in {state_region}, a region it describes ({names}): the outage that "
                      "needs it rebuilt takes the state with it")
        outside = sorted(c for c, r in copy_regions.items() if r and r not in described)
        unread = sorted(c for c, r in copy_regions.items() if r is None)
        if not outside and unread:
            raise ValidatorError("region_unknown", f"the region of cop{'ies' if len(unread) > 1 else 'y'} "
                                 f"{', '.join(unread)} could not be read: whether a copy of the state is outside "
                                 f"the regions it describes ({names}) is unknown")
        if not outside:
            seen = ", ".join(f"{c}: {r or 'unknown'}" for c, r in sorted(copy_regions.items())) or "no copy"
            self.note(self.region_severity, "no_copy_outside_region",
                      f"no copy of the state is in a region outside the ones it describes ({names}); copies: {seen}")


_GUNZIP_LIMIT = 512 * 1024 * 1024


def _gunzip(body: bytes) -> tuple[bytes, str]:
    """(the decompressed state, "") or (b"", why the gzip stream is damaged or cut short: a bad backup). Bounded:
    a state that decompresses past the limit raises ValidatorError (could not check)."""
    out = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = out.decompress(body, _GUNZIP_LIMIT)
    except zlib.error as exc:
        return b"", f"the gzip-compressed state is damaged: {exc}"
    if out.unconsumed_tail:
        raise ValidatorError("state_too_large", f"the gzip-compressed state decompresses to more than "
                             f"{_GUNZIP_LIMIT // 2**20} MiB")
    if not out.eof:
        return b"", "the gzip-compressed state is cut short (its gzip stream does not end)"
    return data, ""


def _version_problem(state: dict[str, Any], version: Any) -> str:
    """Why a state is not one drwatch reads, naming the two look-alikes backed up by mistake or by design."""
    known = f"drwatch knows version {STATE_VERSION} (Terraform >= 0.12, OpenTofu)"
    if isinstance(state.get("backend"), dict):
        kind = str(state["backend"].get("type", "?"))[:40]
        return (f"this is Terraform's backend pointer (.terraform/terraform.tfstate, backend {kind!r}), not the "
                f"state: back up and point drwatch at the state the backend stores; {known}")
    if "encrypted_data" in state:
        return ("the state is encrypted (OpenTofu state encryption): drwatch reads plaintext states only and "
                "cannot judge its version, serial or resources")
    if version is None:
        return f"the state has no 'version' field; {known}"
    return f"the state has version {version!r}; {known}"
