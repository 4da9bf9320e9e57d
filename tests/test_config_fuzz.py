"""Property-based robustness of configuration loading (hypothesis).

Random YAML documents, random text and random mutations of a valid configuration must either load or fail
with a ConfigError listing problems with field paths; ``drwatch check-config`` exits 0 or 78 and never
prints a traceback; nothing hangs (a per-example deadline); mutations known to be valid still load.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drwatch.cli.main import main
from drwatch.config.model import Config, parse_config
from drwatch.core.errors import ConfigError
from drwatch.storage.config import LOCATION_KINDS
from drwatch.validators import PLUGINS

SETTINGS = settings(max_examples=120, deadline=2000, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
# Keys drwatch knows (so random documents reach deep validation, not only "unknown key").
KEYS = ["store", "http", "limits", "logging", "locations", "assets", "consistency_groups", "compliance",
        "sqlite", "postgres", "dsn_env", "dsn_file", "listen", "enabled", "web_config_file", "kind", "path",
        "bucket", "site", "media", "rpo", "rto", "production", "copies", "location", "prefix", "name",
        "validators", "schedule", "every", "jitter", "cron", "timeout", "copies", "window", "level", "format",
        "max_concurrent", "access_key_id_env", "secret_access_key_file", "endpoint_url", "max_skew"]
# Every location kind and every validator kind of the plugin tuple (derived: a new kind is fuzzed without an edit).
KINDS = [*sorted(LOCATION_KINDS), *(plugin.kind for plugin in PLUGINS)]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.sampled_from([*KINDS, "1h", "0s", "-5m", "7d", "127.0.0.1:0", "x:99999", "", "..", "production"]),
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=10), st.integers(-3, 3), st.booleans())
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)), max_leaves=30)


def valid_config(root: str = "/nonexistent-drwatch-fuzz") -> dict[str, Any]:
    return {
        "store": {"sqlite": f"{root}/state.sqlite", "retention": "30d"},
        "http": {"listen": "127.0.0.1:0"},
        "limits": {"max_concurrent": 4, "default_timeout": "10m"},
        "logging": {"level": "info"},
        "locations": {"prod": {"kind": "filesystem", "path": f"{root}/prod", "site": "a"},
                      "dr": {"kind": "filesystem", "path": f"{root}/dr", "site": "b", "media": "tape"}},
        "assets": {"data": {"rpo": "1d", "rto": "4h", "production": {"location": "prod", "prefix": "x"},
                            "copies": [{"location": "dr", "prefix": "x"}],
                            "validators": [{"kind": "replica", "schedule": {"every": "1h", "jitter": "5m"}}]}},
        "compliance": {"copies": 2, "media": 2, "offsite": 1, "immutable": 0, "window": "7d"},
    }


def load(text: str) -> Config | ConfigError:
    """parse_config's result: a Config or the ConfigError; anything else propagates and fails the test."""
    try:
        return parse_config(text, source="/nonexistent-drwatch-fuzz/drwatch.yaml")
    except ConfigError as exc:
        assert exc.problems, "a ConfigError without problems"
        for problem in exc.problems:
            assert problem.message.strip(), exc
        return exc


def check_config_exit(text: str) -> tuple[int, str]:
    """`drwatch check-config` in this process (the CLI's own code path): exit code and stderr."""
    with tempfile.TemporaryDirectory(prefix="drw-fuzz-") as tmp:
        path = Path(tmp) / "drwatch.yaml"
        path.write_text(text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check-config", str(path)])
        return code, err.getvalue()


@SETTINGS
@given(documents)
def test_random_documents_load_or_fail_with_paths(doc: Any) -> None:
    """Any YAML document: a Config or a ConfigError whose problems (for a mapping at the top) all name a
    field path; `check-config` exits 0 or 78 without a traceback."""
    text = yaml.safe_dump(doc)
    result = load(text)
    if isinstance(result, ConfigError) and isinstance(doc, dict) and doc and "" not in doc:
        assert all(p.path for p in result.problems), result  # (an empty key's path is itself empty)
    code, err = check_config_exit(text)
    # (check-config accepts a file without assets, with a warning: `seal` can use it; `run`/`check` refuse it)
    assert code == (0 if isinstance(result, Config) else 78)
    assert "Traceback" not in err


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_is_never_a_crash(text: str) -> None:
    """Arbitrary text (broken YAML, tabs, anchors, tags, control characters) is a ConfigError or a config."""
    load(text)


yaml_fragments = st.lists(st.sampled_from([
    "a: &x [1, 2]\n", "b: *x\n", "c: *nothing\n", "<<: {rpo: 1h}\n", "!!python/object:os.system {}\n",
    "assets:\n", "  data:\n", "    rpo: 1h\n", "\t- x\n", "---\n", "...\n", "? [a]\n: b\n", "k: !!binary aGk=\n",
    "k: 2001-12-14\n", "store: {sqlite: x, sqlite: y}\n", "%YAML 1.1\n", "'\n", "x: [\n", "{{\n",
]), max_size=8)


@SETTINGS
@given(yaml_fragments)
def test_yaml_fragments_are_never_a_crash(parts: list[str]) -> None:
    """Pieces of tricky YAML glued together (aliases, merge keys, python tags, duplicate keys, binary, dates,
    unterminated flows) only ever load or fail as ConfigError; a python tag never constructs anything."""
    result = load("".join(parts))
    if "!!python" in "".join(parts):
        assert isinstance(result, ConfigError)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    doc = valid_config()
    path = draw(st.sampled_from([p for p in _paths(doc) if p]))
    parent, last = _parent(doc, path), path[-1]
    op = draw(st.sampled_from(["delete", "replace", "add_key", "rename", "wrap_list"]))
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = draw(documents)
    elif op == "add_key" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(scalars)
    elif op == "rename" and isinstance(parent, dict):
        parent[str(last) + draw(st.sampled_from(["_", "s", "x", "_env"]))] = parent.pop(last)
    else:
        parent[last] = [parent[last]]
    return doc, op


@SETTINGS
@given(mutated())
def test_mutations_of_a_valid_config_never_crash(case: tuple[dict[str, Any], str]) -> None:
    """One mutation of a valid config (delete a field, replace a value by a random document, add an unknown
    key, rename a key, wrap a value in a list): a Config or a ConfigError with field paths, and an unknown
    key is always reported by its path."""
    doc, op = case
    result = load(yaml.safe_dump(doc))
    if isinstance(result, ConfigError):
        assert all(p.path for p in result.problems), result
    if op in ("add_key", "rename") and isinstance(result, ConfigError):
        assert any("unknown key" in p.message or "required" in p.message or p.path for p in result.problems)


durations = st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 999), st.sampled_from(["s", "m", "h", "d"]))


@SETTINGS
@given(rpo=durations, every=durations, retention=durations, copies=st.integers(0, 5),
       extra=st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True), max_size=4, unique=True),
       listen=st.sampled_from(["127.0.0.1", "0.0.0.0", "[::1]", "localhost"]), port=st.integers(0, 65535))
def test_valid_mutations_load(rpo: str, every: str, retention: str, copies: int, extra: list[str], listen: str,
                              port: int) -> None:
    """Mutations that keep the config valid (other durations, counts, more assets with valid names, other
    listen addresses) load, and the values read back are the ones written."""
    doc = copy.deepcopy(valid_config())
    doc["assets"]["data"]["rpo"] = rpo
    doc["assets"]["data"]["validators"][0]["schedule"] = {"every": every}
    doc["store"]["retention"] = retention
    doc["compliance"]["copies"] = copies
    doc["http"]["listen"] = f"{listen}:{port}"
    for name in extra:
        if name not in doc["assets"]:
            doc["assets"][name] = {"rpo": rpo, "production": {"location": "prod", "prefix": name}}
    result = load(yaml.safe_dump(doc))
    assert isinstance(result, Config), result
    assert set(result.assets) == {"data", *extra}
    assert result.compliance.copies == copies and result.http.port == port
    assert all(result.assets[name].rpo == result.assets["data"].rpo for name in extra)


def test_alias_bomb_and_deep_nesting_are_config_errors() -> None:
    """A "billion laughs" document (nine lines that expand to 10^9 values), a self-referencing alias and
    nesting 5000 levels deep are rejected at once as malformed YAML, not a hang or a RecursionError."""
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    for text in ("\n".join(lines), "a: &a [*a]", "a: " + "[" * 5000 + "]" * 5000):
        started = time.monotonic()
        result = load(text)
        assert isinstance(result, ConfigError) and "malformed YAML" in str(result), result
        assert time.monotonic() - started < 2
    code, err = check_config_exit("\n".join(lines))
    assert code == 78 and "aliases expand" in err
