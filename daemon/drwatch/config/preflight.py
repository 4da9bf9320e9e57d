"""What ``check-config`` checks beyond validity, in the environment it runs in: optional extras the configured
features import, filesystem paths of locations and copies, and seal public keys. Warnings, not errors (an
offline disk is unmounted most of the time; the service may run with another environment): each says what
`run`/`check` would do. Blocking (find_spec and stat calls): called by the CLI, never on the event loop.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.extras import CLUSTER, warning
from drwatch.storage.config import FilesystemLocationConfig

if TYPE_CHECKING:
    from drwatch.config.model import Config


def extras_warnings(cfg: Config) -> list[str]:
    """A warning per configured feature whose optional extra is not installed for this Python."""
    out = []
    for aname, asset in cfg.assets.items():
        for i, vcfg in enumerate(asset.validators):
            for need in vcfg.needs():
                where = f"assets.{aname}.validators[{i}]" + (f".{need.field}" if need.field else "")
                text = warning(where, f"validator {vcfg.label!r} ({vcfg.kind})", need)
                if text is not None:
                    out.append(text)
    missing = CLUSTER.missing() if cfg.cluster.enabled else ()
    if missing:
        out.append(f"cluster.enabled: cluster mode needs {' and '.join(missing)} (its job engine), not installed "
                   f"for this Python: `drwatch run` would exit 69 at start; install the `{CLUSTER.name}` extra: "
                   f"{CLUSTER.install}")
    return out


# check-config runs before every `systemctl reload`: a hung network mount must not hang it (stat blocks there).
PATH_TIMEOUT = 5.0


def _within(fn: Callable[[Path], str | None], path: Path) -> str | None:
    """``fn(path)`` in a daemon thread, given up after PATH_TIMEOUT (the thread is left to finish or hang)."""
    box: list[str | None] = []
    worker = threading.Thread(target=lambda: box.append(fn(path)), name="drwatch-path-check", daemon=True)
    worker.start()
    worker.join(PATH_TIMEOUT)
    return box[0] if box else f"did not answer within {PATH_TIMEOUT:g} s (a hung network mount?)"


def _dir_problem(path: Path) -> str | None:
    """None for a readable directory, else what is wrong with it, as an operator says it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except NotADirectoryError:
        return "not found (a parent is not a directory)"
    except PermissionError:
        return "not readable (permission denied on a parent directory)"
    except OSError as exc:
        return f"not readable ({exc.strerror or exc})"
    if not stat.S_ISDIR(mode):
        return "not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "not readable (permission denied for this user)"
    return None


def _location_problem(root: Path) -> str | None:
    problem = _dir_problem(root)
    if problem is None and _empty(root) and not os.path.ismount(root):
        # what an unmounted disk's mount point looks like: a run says "not mounted?" (storage/sources.py)
        return "is an empty directory and not a mount point (not mounted?)"
    return problem


def _empty(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def path_warnings(cfg: Config) -> list[str]:
    """Filesystem locations and the production/copy directories in them that are missing or unreadable here.

    A missing location is reported once (its copies are not looked at); an offline location is expected to
    be unmounted most of the time and says so.
    """
    out = []
    usable: set[str] = set()
    for name, loc in cfg.locations.items():
        if not isinstance(loc, FilesystemLocationConfig):
            continue
        root = cfg.resolve_path(loc.path)
        problem = _within(_location_problem, root)
        if problem is None:
            usable.add(name)
        elif loc.offline:
            out.append(f"locations.{name}.path: {root} {problem} (declared offline: normal while it is not "
                       "mounted; `drwatch attest` records a hand check)")
        else:
            out.append(f"locations.{name}.path: {root} {problem}: checks reading it end as `error` "
                       "(location_unavailable) until it is mounted and readable")
    for aname, asset in cfg.assets.items():
        refs = [("production", asset.production), *((f"copies[{i}]", c) for i, c in enumerate(asset.copies))]
        for where, ref in refs:
            fs = cfg.locations.get(ref.location)
            if ref.location not in usable or not ref.prefix or not isinstance(fs, FilesystemLocationConfig):
                continue
            path = cfg.resolve_path(fs.path).joinpath(*ref.prefix.split("/"))
            problem = _within(_dir_problem, path)
            if problem is None:
                continue
            # What a run concludes (validators/copies/posture.py probe_location): location there, directory not.
            effect = ("a copy missing from a location that is there is a bad backup: checks end as `failed` "
                      "(copy_missing)") if where != "production" else "checks end as `error` (production_missing)"
            if problem.startswith("not readable"):
                effect = "checks end as `error` (unreadable)"
            out.append(f"assets.{aname}.{where}.prefix: {path} {problem} (location {ref.location!r} is there): "
                       f"{effect}")
    return out


def _key_problem(path: Path) -> str | None:
    """None when ``path`` holds a readable Ed25519 public key (PEM), else why not (the reader's own message)."""
    from drwatch.formats.sealsign import SealKeyError, load_public_key

    try:
        load_public_key(path)
    except SealKeyError as exc:
        return exc.strerror or str(exc)
    return None


def seal_key_warnings(cfg: Config) -> list[str]:
    """Assets whose ``seal_signature`` public key file is missing, unreadable or not an Ed25519 public key here:
    every check that reads their seal would end as ``error`` (manifest_unreadable), nothing judged."""
    out = []
    for aname, asset in cfg.assets.items():
        if asset.seal_signature is None:
            continue
        path = cfg.resolve_path(asset.seal_signature.public_key_path)
        problem = _within(_key_problem, path)
        if problem is not None:
            out.append(f"assets.{aname}.seal_signature.public_key_path: {problem}: checks reading this asset's "
                       "seal (replica, dataset, model_weights, consistency_group) end as `error` "
                       "(manifest_unreadable) until the key is there and readable")
    return out


def profile_warnings(cfg: Config) -> list[str]:
    """S3 locations whose AWS ``profile`` is not configured in this environment (AWS_CONFIG_FILE,
    AWS_SHARED_CREDENTIALS_FILE, ~/.aws/): every check on them would end as ``error`` (no_credentials)."""
    from drwatch.storage.config import S3LocationConfig

    profiles = {name: loc.profile for name, loc in cfg.locations.items()
                if isinstance(loc, S3LocationConfig) and loc.profile and loc.access_key_id_env is None
                and loc.access_key_id_file is None}
    if not profiles:
        return []
    import botocore.session  # only when a profile is named: heavy

    known = set(botocore.session.Session().available_profiles)
    return [f"locations.{name}.profile: AWS profile {profile!r} is not configured here (AWS_CONFIG_FILE, "
            "AWS_SHARED_CREDENTIALS_FILE or ~/.aws/): checks on this location end as `error` (no_credentials) "
            "where it is missing; the service loads it from the drwatch-aws-credentials credential"
            for name, profile in sorted(profiles.items()) if profile not in known]


def ca_file_warnings(cfg: Config, data: Any, path: str = "") -> list[str]:
    """Every ``ca_file`` in the config data (a recovery dependency's CA bundle, resolved against the config's
    directory) that is missing or unreadable here: that dependency is not checked (dependency_not_checked)."""
    out: list[str] = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        if key == "ca_file" and isinstance(value, str):
            resolved = cfg.resolve_path(value)
            problem = _within(_file_problem, resolved)
            if problem is not None:
                out.append(f"{where}: {resolved} {problem}: this dependency is not checked "
                           "(`dependency_not_checked`, a warning: the run ends as `error` unless another dependency "
                           "is down)")
        else:
            out += ca_file_warnings(cfg, value, where)
    return out


def _file_problem(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return (exc.strerror or "cannot be read").lower()
