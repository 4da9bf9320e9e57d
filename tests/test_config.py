"""Configuration: bad input gets a clear error naming its field path, and nothing is silently dropped.

Covered twice: through ``parse_config``/``load_config`` (``ConfigError.problems``) and through the real
``drwatch check-config`` subprocess (exit 78, every problem on stderr with its path).
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import load_config, parse_config, reference_data
from drwatch.core.durations import format_duration
from drwatch.core.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from drwatch.storage.config import LOCATION_KINDS
from drwatch.validators.config import VALIDATOR_KINDS
from tests.support.helpers import run_cli

Key = str | int

# Fragments of pydantic's internal locations that must never reach an operator.
INTERNALS = (
    "function-after",
    "function-before",
    "function-wrap",
    "function-plain",
    "[key]",
    "tagged-union",
    ".replica.",
    ".filesystem.",
    "Input should be a valid dictionary or instance of",
)


def estate() -> dict[str, Any]:
    """A valid config: asset 'weights' on 'prod', copied to 'near' (same site) and 'far' (other site)."""
    return {
        "store": {"sqlite": "state.sqlite"},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {
            "prod": {"kind": "filesystem", "path": "/srv/prod", "site": "dc-a", "media": "ssd"},
            "near": {"kind": "filesystem", "path": "/srv/near", "site": "dc-a", "media": "ssd"},
            "far": {"kind": "filesystem", "path": "/srv/far", "site": "dc-b", "media": "hdd"},
        },
        "assets": {
            "weights": {
                "rpo": "1d",
                "rto": "4h",
                "production": {"location": "prod", "prefix": "models/llm"},
                "copies": [
                    {"location": "near", "prefix": "models/llm"},
                    {"location": "far", "prefix": "models/llm"},
                ],
                "validators": [{"kind": "replica", "schedule": {"every": "1h", "jitter": "5m"}}],
            },
        },
    }


def put(data: dict[str, Any], path: Sequence[Key], value: Any) -> dict[str, Any]:
    """Set ``data[path[0]][path[1]]...`` to value (in place) and return data."""
    node: Any = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return data


def modified(path: Sequence[Key], value: Any) -> dict[str, Any]:
    return put(estate(), path, value)


def problems_of(data: dict[str, Any] | str) -> list[tuple[str, str]]:
    """The (path, message) problems parse_config reports; fails the test if the config is accepted."""
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="test.yaml")
    assert info.value.source == "test.yaml"
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return [(p.path, p.message) for p in info.value.problems]


def only_problem(data: dict[str, Any] | str) -> tuple[str, str]:
    found = problems_of(data)
    assert len(found) == 1, found
    return found[0]


def assert_clean_paths(found: list[tuple[str, str]]) -> None:
    for path, message in found:
        text = f"{path}: {message}"
        for internal in INTERNALS:
            assert internal not in text, text


# --- parse_config ---------------------------------------------------------------------------------


def test_valid_config_parses_with_typed_values() -> None:
    """A valid config is accepted: durations become timedeltas, copies get labels, defaults are filled."""
    cfg = parse_config(yaml.safe_dump(estate()), source="/etc/drwatch/drwatch.yaml")
    asset = cfg.assets["weights"]
    assert asset.rpo == timedelta(days=1)
    assert asset.rto == timedelta(hours=4)
    assert [c.label for c in asset.copies] == ["near", "far"]
    assert asset.validators[0].schedule.jitter == timedelta(minutes=5)
    assert cfg.compliance.copies == 3
    assert cfg.source == "/etc/drwatch/drwatch.yaml"
    assert cfg.base_dir == Path("/etc/drwatch")


def test_malformed_yaml_reports_line_and_column() -> None:
    """Broken YAML is one problem whose path is the line and column the parser blames first (where the
    unclosed flow sequence opened); where it gave up follows in the message."""
    text = "store:\n  sqlite: x.db\nassets: [1, 2\nhttp: {}\n"
    path, message = only_problem(text)
    assert path == "line 3, column 9"
    assert message.startswith("malformed YAML: while parsing a flow sequence: ")
    assert message.endswith(" at line 4, column 5")


def test_unclosed_quote_is_reported_where_it_opened() -> None:
    """An unclosed quote on line 14 of a 31-line file: PyYAML gives up at the end of the stream (line 32) but
    says where the quoted scalar began; that line comes first, the end of stream second."""
    lines = [f"k{i}: v{i}" for i in range(1, 14)] + ['k14: "unclosed'] + [f"k{i}: v{i}" for i in range(15, 32)]
    path, message = only_problem("\n".join(lines) + "\n")
    assert path == "line 14, column 6"
    assert message == ("malformed YAML: while scanning a quoted scalar: found unexpected end of stream "
                       "at line 32, column 1")


def test_tab_indentation_reports_line_and_column() -> None:
    """A tab used for indentation is reported with the line it is on."""
    path, message = only_problem("store:\n\tsqlite: x.db\n")
    assert path.startswith("line 2, column ")
    assert "malformed YAML" in message


def test_duplicate_yaml_key_is_an_error_not_a_silent_override() -> None:
    """A key given twice in one mapping is reported (YAML would keep only the last one, losing the first)."""
    text = yaml.safe_dump(estate(), sort_keys=False) + "assets:\n  other: {}\n"
    path, message = only_problem(text)
    assert path.startswith("line ")
    assert "'assets'" in message
    assert "twice" in message or "duplicate" in message


def test_duplicate_nested_yaml_key_is_an_error() -> None:
    """Duplicate keys inside nested mappings are caught too."""
    text = "locations:\n  a: {kind: filesystem, path: /a, site: x, site: y}\n"
    path, message = only_problem(text)
    assert path == "line 2, column 44"
    assert "'site'" in message


@pytest.mark.parametrize("text", ["- store\n- http\n", "just text\n", "42\n", "[1, 2]\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    """A YAML document that is not a mapping is rejected as a whole, with an empty path."""
    path, message = only_problem(text)
    assert path == ""
    assert "top level must be a mapping" in message


def test_empty_document_parses_to_defaults_but_a_file_must_define_assets(tmp_path: Path) -> None:
    """An empty document parses to all defaults (no assets); a configuration *file* that is empty (a truncated
    deploy) or defines no asset is refused with a clear problem: drwatch would watch nothing, and a reload to it
    would silently clear every asset's series (and with them every alert)."""
    cfg = parse_config("", source="empty.yaml")
    assert cfg.assets == {}
    assert cfg.http.listen == "127.0.0.1:10099"
    for text, where, words in (("", "", "empty"), ("  \n\n", "", "empty"),
                               ("http: {listen: '127.0.0.1:9'}\n", "assets", "no assets")):
        path = tmp_path / "drwatch.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        [problem] = info.value.problems
        assert problem.path == where and words in problem.message


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ((), "bogus"),
        (("store",), "store.bogus"),
        (("http",), "http.bogus"),
        (("locations", "far"), "locations.far.bogus"),
        (("assets", "weights"), "assets.weights.bogus"),
        (("assets", "weights", "production"), "assets.weights.production.bogus"),
        (("assets", "weights", "copies", 0), "assets.weights.copies[0].bogus"),
        (("assets", "weights", "copies", 1), "assets.weights.copies[1].bogus"),
        (("assets", "weights", "validators", 0), "assets.weights.validators[0].bogus"),
        (("assets", "weights", "validators", 0, "schedule"), "assets.weights.validators[0].schedule.bogus"),
    ],
)
def test_unknown_key_is_reported_with_its_full_path(where: tuple[Key, ...], expected: str) -> None:
    """An unknown key at any depth is one problem whose path names exactly that key."""
    assert only_problem(modified((*where, "bogus"), 1)) == (expected, "unknown key (not allowed here)")


@pytest.mark.parametrize("section", ["compliance", "limits", "logging", "consistency_groups"])
def test_unknown_key_in_optional_sections(section: str) -> None:
    """Sections left at their defaults still reject unknown keys (consistency_groups entries included)."""
    data = estate()
    if section == "consistency_groups":
        data[section] = {"g": {"assets": ["weights", "weights"], "max_skew": "1h", "bogus": 1}}
        expected = "consistency_groups.g.bogus"
    else:
        data[section] = {"bogus": 1}
        expected = f"{section}.bogus"
    assert only_problem(data) == (expected, "unknown key (not allowed here)")


@pytest.mark.parametrize("key", ["source", "digest"])
def test_internal_fields_cannot_be_set_from_the_file(key: str) -> None:
    """'source' and 'digest' are set by drwatch; in the file they are unknown keys, not silently replaced."""
    assert only_problem(modified((key,), "x")) == (key, "unknown key (not allowed here)")


@pytest.mark.parametrize(
    ("path", "value", "expected_path", "fragment"),
    [
        (("assets", "weights", "copies"), "near", "assets.weights.copies", "list"),
        (("assets", "weights", "validators"), {"kind": "replica"}, "assets.weights.validators", "list"),
        (("assets", "weights"), 3, "assets.weights", "mapping"),
        (("assets", "weights"), None, "assets.weights", "mapping"),
        (("locations",), ["prod", "far"], "locations", "mapping"),
        (("limits", "max_concurrent"), "many", "limits.max_concurrent", "integer"),
        (("limits", "max_concurrent"), 2.5, "limits.max_concurrent", "integer"),
        (("compliance", "copies"), True, "compliance.copies", "integer"),
        (("compliance", "copies"), -1, "compliance.copies", "greater than or equal to 0"),
        (("http", "enabled"), "maybe", "http.enabled", "true or false"),
        (("locations", "far", "path"), ["/a"], "locations.far.path", "text"),
        (("logging", "level"), "verbose", "logging.level", "'debug'"),
    ],
)
def test_wrong_type_names_the_field_and_the_expected_type(
    path: tuple[Key, ...], value: Any, expected_path: str, fragment: str
) -> None:
    """A value of the wrong type is reported at its path with what was expected, in operator words."""
    found_path, message = only_problem(modified(path, value))
    assert found_path == expected_path
    assert fragment in message
    assert_clean_paths([(found_path, message)])


def test_non_text_mapping_key_is_reported_at_that_key() -> None:
    """A mapping key that is not text (YAML `1:`) is reported as `assets.1`, not as a list index."""
    data = estate()
    data["assets"][1] = data["assets"].pop("weights")
    found = problems_of(data)
    assert ("assets.1", "keys must be text") in found
    assert_clean_paths(found)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("5 minutes", "invalid duration '5 minutes'"),
        ("-1s", "cannot be negative"),
        (-5, "cannot be negative"),
        (True, "a duration must be text"),
        ([1], "a duration must be text"),
        ("", "empty duration"),
        ("1h30", "invalid duration '1h30'"),
        (float("inf"), "finite"),
        (float("nan"), "finite"),
        ("99999999999999999d", "too long"),
        (1e300, "too long"),
    ],
)
def test_bad_duration_is_a_clear_problem(value: Any, fragment: str) -> None:
    """Bad durations (unit words, negatives, booleans, infinities, overflow) are problems, never crashes."""
    path, message = only_problem(modified(("assets", "weights", "rpo"), value))
    assert path == "assets.weights.rpo"
    assert fragment in message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("assets", "weights", "validators", 0, "timeout"), "assets.weights.validators[0].timeout"),
        (("assets", "weights", "validators", 0, "schedule", "every"), "assets.weights.validators[0].schedule.every"),
        (("compliance", "window"), "compliance.window"),
        (("store", "retention"), "store.retention"),
    ],
)
def test_bad_durations_anywhere_are_reported_at_their_path(path: tuple[Key, ...], expected: str) -> None:
    """Every duration field reports its own path (nested in lists and schedules included)."""
    found = problems_of(put(estate(), path, "5 minutes"))
    assert (expected, "invalid duration '5 minutes': expected e.g. 30s, 15m, 24h, 7d, 1h30m") in found


def test_durations_render_for_people() -> None:
    """format_duration (messages, tables) uses the largest units, rounds above 1s and keeps the sign."""
    assert format_duration(0.25) == "250ms"
    assert format_duration(3661.4) == "1h1m1s"
    assert format_duration(7 * 86400) == "7d"
    assert format_duration(-90) == "-1m30s"


def test_zero_rpo_is_rejected() -> None:
    """An RPO of zero can never be met: it is a configuration mistake, not a policy."""
    path, message = only_problem(modified(("assets", "weights", "rpo"), "0s"))
    assert path == "assets.weights.rpo"
    assert "greater than zero" in message


def test_durations_accept_units_combinations_and_seconds() -> None:
    """Durations: ms, s, m, h, d, w, combinations, and a plain number of seconds."""
    data = estate()
    data["assets"]["weights"]["rpo"] = "1w2d"
    data["assets"]["weights"]["rto"] = 90
    data["assets"]["weights"]["validators"][0]["timeout"] = "1h30m500ms"
    cfg = parse_config(yaml.safe_dump(data))
    assert cfg.assets["weights"].rpo == timedelta(days=9)
    assert cfg.assets["weights"].rto == timedelta(seconds=90)
    assert cfg.assets["weights"].validators[0].timeout == timedelta(hours=1, minutes=30, milliseconds=500)


def test_unknown_location_of_a_copy_names_the_copy() -> None:
    """A copy referencing an undefined location is reported at that copy's `location` field."""
    data = estate()
    data["assets"]["weights"]["copies"][1]["location"] = "vault"
    assert only_problem(data) == (
        "assets.weights.copies[1].location",
        "unknown location 'vault' (known: far, near, prod)",
    )


def test_unknown_location_of_production_is_reported() -> None:
    """Production referencing an undefined location is reported at `production.location`."""
    assert only_problem(modified(("assets", "weights", "production", "location"), "nowhere")) == (
        "assets.weights.production.location",
        "unknown location 'nowhere' (known: far, near, prod)",
    )


def test_unknown_location_with_no_locations_defined() -> None:
    """With no locations at all, the message says so rather than listing nothing."""
    data = estate()
    del data["locations"]
    found = problems_of(data)
    assert ("assets.weights.production.location", "unknown location 'prod' (known: none defined)") in found
    assert len(found) == 3


def test_unknown_validator_kind_lists_the_known_kinds() -> None:
    """An unknown validator kind is reported at `kind` with the kinds drwatch knows."""
    path, message = only_problem(modified(("assets", "weights", "validators", 0, "kind"), "restore"))
    assert path == "assets.weights.validators[0].kind"
    assert message == f"unknown validator kind 'restore' (known: {', '.join(sorted(VALIDATOR_KINDS))})"
    assert "replica" in VALIDATOR_KINDS


def test_missing_validator_kind_is_required() -> None:
    """A validator without `kind` is an error (the kind is required, it is not guessed)."""
    data = estate()
    data["assets"]["weights"]["validators"] = [{"name": "nightly"}]
    assert only_problem(data) == ("assets.weights.validators[0].kind", "required field is missing")


def test_unknown_location_kind_lists_the_known_kinds() -> None:
    """An unknown location kind is reported at `kind` with the kinds drwatch knows."""
    path, message = only_problem(modified(("locations", "far", "kind"), "nfs"))
    assert path == "locations.far.kind"
    assert message == f"unknown location kind 'nfs' (known: {', '.join(sorted(LOCATION_KINDS))})"
    assert "filesystem" in LOCATION_KINDS


def test_duplicate_copy_names_point_at_the_second_copy() -> None:
    """Two copies in one location without `name` collide; the problem is at the repeated copy."""
    data = estate()
    data["assets"]["weights"]["copies"].append({"location": "far", "prefix": "other"})
    path, message = only_problem(data)
    assert path == "assets.weights.copies[2]"
    assert "'far'" in message
    assert "name" in message


def test_distinct_names_make_copies_in_one_location_valid() -> None:
    """Giving copies in the same location distinct names resolves the collision."""
    data = estate()
    data["assets"]["weights"]["copies"].append({"location": "far", "prefix": "other", "name": "far-2"})
    cfg = parse_config(yaml.safe_dump(data))
    assert [c.label for c in cfg.assets["weights"].copies] == ["near", "far", "far-2"]


def test_copy_named_production_is_reserved() -> None:
    """'production' cannot be used as a copy name; the problem is at that copy's `name`."""
    data = modified(("assets", "weights", "copies", 0, "name"), "production")
    path, message = only_problem(data)
    assert path == "assets.weights.copies[0].name"
    assert "reserved" in message


def test_duplicate_validator_names_point_at_the_second_validator() -> None:
    """Two validators with the same label collide; the problem is at the repeated one."""
    data = estate()
    data["assets"]["weights"]["validators"].append({"kind": "replica"})
    path, message = only_problem(data)
    assert path == "assets.weights.validators[1].name"
    assert "'replica'" in message


@pytest.mark.parametrize(
    ("where", "name", "expected"),
    [
        ("locations", "bad name", "locations.bad name"),
        ("assets", "-weights", "assets.-weights"),
    ],
)
def test_invalid_names_are_reported_at_their_key(where: str, name: str, expected: str) -> None:
    """Location and asset names must be metric-label friendly; the problem names the key."""
    data = estate()
    data[where][name] = data[where].pop("far" if where == "locations" else "weights")
    if where == "locations":
        data["assets"]["weights"]["copies"][1]["location"] = name
    found = problems_of(data)
    assert [p for p, _ in found] == [expected]
    assert "invalid" in found[0][1]


def test_invalid_cron_is_reported_at_the_cron_field() -> None:
    """A cron expression that cannot fire is reported at `schedule.cron`."""
    found = problems_of(modified(("assets", "weights", "validators", 0, "schedule"), {"cron": "61 * * * *"}))
    assert len(found) == 1
    path, message = found[0]
    assert path == "assets.weights.validators[0].schedule.cron"
    assert message.startswith("invalid cron expression '61 * * * *'")


def test_jitter_larger_than_every_is_rejected() -> None:
    """Jitter greater than the interval would let runs overtake each other: rejected at the schedule."""
    schedule = {"every": "1m", "jitter": "5m"}
    path, message = only_problem(modified(("assets", "weights", "validators", 0, "schedule"), schedule))
    assert path == "assets.weights.validators[0].schedule"
    assert "'jitter' cannot exceed 'every'" in message


def test_schedule_needs_exactly_one_of_every_and_cron() -> None:
    """A schedule with both `every` and `cron` (or neither) is one problem at the schedule."""
    schedule = {"every": "1h", "cron": "0 3 * * *"}
    path, message = only_problem(modified(("assets", "weights", "validators", 0, "schedule"), schedule))
    assert path == "assets.weights.validators[0].schedule"
    assert "exactly one of 'every'" in message


def test_both_store_backends_is_rejected() -> None:
    """Configuring sqlite and postgres together is ambiguous and rejected at `store`."""
    data = modified(("store",), {"sqlite": "x.db", "postgres": {"dsn_env": "DRWATCH_DSN"}})
    assert only_problem(data) == ("store", "choose one store backend: sqlite or postgres, not both")


@pytest.mark.parametrize("postgres", [{}, {"dsn_env": "A", "dsn_file": "/run/dsn"}, {"pool_max": 3}])
def test_postgres_needs_exactly_one_dsn_source(postgres: dict[str, Any]) -> None:
    """PostgreSQL needs exactly one of dsn_env / dsn_file, reported at `store.postgres`."""
    path, message = only_problem(modified(("store",), {"postgres": postgres}))
    assert path == "store.postgres"
    assert "dsn_env" in message
    assert "dsn_file" in message


def test_dsn_inlined_into_dsn_env_is_rejected_without_echoing_it() -> None:
    """A DSN pasted into dsn_env (instead of a variable name) is an error whose text never repeats it."""
    secret = "postgresql://drwatch:s3cret-pw@db.internal/drwatch"
    path, message = only_problem(modified(("store",), {"postgres": {"dsn_env": secret}}))
    assert path == "store.postgres.dsn_env"
    assert "name of an environment variable" in message
    assert "s3cret" not in message


def test_any_env_reference_must_be_a_variable_name() -> None:
    """Every `*_env` field (here an S3 location's keys) must name a variable; pasted keys are never echoed."""
    data = estate()
    data["locations"]["bucket"] = {
        "kind": "s3",
        "bucket": "dr-copies",
        "access_key_id_env": "DR_KEY_ID",
        "secret_access_key_env": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    found = problems_of(data)
    assert [p for p, _ in found] == ["locations.bucket.secret_access_key_env"]
    assert "EXAMPLEKEY" not in found[0][1]


@pytest.mark.parametrize("where", ["location", "rds_snapshot"])
@pytest.mark.parametrize("credential", ["access_key_id", "secret_access_key", "session_token"])
def test_a_credential_has_one_source(where: str, credential: str) -> None:
    """An AWS credential named both by variable and by file (which one would be used?) is refused, for an S3
    location as for rds_snapshot (one model for both: the location once accepted two session tokens)."""
    data = estate()
    keys = {"access_key_id_env": "DR_KEY_ID", "secret_access_key_env": "DR_SECRET",
            f"{credential}_env": "DR_EITHER", f"{credential}_file": "/run/credentials/either"}
    if where == "location":
        data["locations"]["bucket"] = {"kind": "s3", "bucket": "dr-copies", **keys}
        expected_path = "locations.bucket"
    else:
        data["assets"]["weights"]["validators"].append({"kind": "rds_snapshot", "instance": "db1", **keys})
        expected_path = f"assets.weights.validators[{len(data['assets']['weights']['validators']) - 1}]"
    path, message = only_problem(data)
    assert path == expected_path
    assert f"set at most one of {credential}_env / {credential}_file" in message


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:", "localhost:http", "127.0.0.1:70000", ":10099"])
def test_listen_needs_host_and_port(listen: str) -> None:
    """`http.listen` must be HOST:PORT with a numeric port in range and an explicit host."""
    path, message = only_problem(modified(("http", "listen"), listen))
    assert path == "http.listen"
    assert "listen" in message


def test_unknown_asset_in_consistency_group() -> None:
    """Consistency group members must be configured assets; the problem names the member's index."""
    data = estate()
    data["consistency_groups"] = {"rag": {"assets": ["weights", "index"], "max_skew": "1h"}}
    assert only_problem(data) == ("consistency_groups.rag.assets[1]", "unknown asset 'index'")


def test_replica_restricted_to_unknown_copy() -> None:
    """A replica validator limited to copies the asset does not have is reported at that list entry."""
    data = modified(("assets", "weights", "validators", 0, "copies"), ["far", "tape"])
    path, message = only_problem(data)
    assert path == "assets.weights.validators[0].copies[1]"
    assert "unknown copy 'tape'" in message


def test_several_problems_are_all_reported_at_once() -> None:
    """Type errors, unknown keys, reference errors and name collisions are listed together, not one by one."""
    data = estate()
    asset = data["assets"]["weights"]
    asset["rpo"] = "5 minutes"
    asset["copies"][0]["bogus"] = True
    asset["copies"][1]["location"] = "vault"
    asset["copies"].append({"location": "near"})
    data["http"]["listen"] = "127.0.0.1"
    data["consistency_groups"] = {"rag": {"assets": ["weights", "index"], "max_skew": "1h"}}
    found = problems_of(data)
    paths = [p for p, _ in found]
    assert sorted(paths) == sorted(
        [
            "assets.weights.rpo",
            "assets.weights.copies[0].bogus",
            "assets.weights.copies[1].location",
            "assets.weights.copies[2]",
            "http.listen",
            "consistency_groups.rag.assets[1]",
        ]
    )
    assert_clean_paths(found)


def test_problems_in_several_assets_are_all_reported() -> None:
    """A problem in one asset does not hide problems in another."""
    data = estate()
    other = copy.deepcopy(data["assets"]["weights"])
    other["production"]["location"] = "nowhere"
    data["assets"]["index"] = other
    data["assets"]["weights"]["validators"][0]["kind"] = "restore"
    found = problems_of(data)
    assert [p for p, _ in found] == ["assets.weights.validators[0].kind", "assets.index.production.location"]


def test_no_problem_path_contains_pydantic_internals() -> None:
    """Paths read as an operator writes them: no `function-after`, no discriminator tags, no `[key]`."""
    data = estate()
    data["locations"]["far"]["bogus"] = 1
    data["locations"]["near"]["max_concurrency"] = 0
    data["assets"]["weights"]["validators"][0]["list_limit"] = "ten"
    data["assets"]["weights"]["validators"][0]["schedule"] = {"every": "0s"}
    data["assets"]["weights"]["production"]["prefix"] = "../etc"
    data["store"] = {"postgres": {"dsn_env": "X", "pool_max": 0}}
    found = problems_of(data)
    assert_clean_paths(found)
    assert sorted(p for p, _ in found) == sorted(
        [
            "locations.far.bogus",
            "locations.near.max_concurrency",
            "assets.weights.validators[0].list_limit",
            "assets.weights.validators[0].schedule",
            "assets.weights.production.prefix",
            "store.postgres.pool_max",
        ]
    )


def test_reference_data_round_trips_without_loss() -> None:
    """The config as data parses back to an equal config (sub-second durations included)."""
    data = estate()
    data["assets"]["weights"]["validators"][0]["timeout"] = "1500ms"
    data["limits"] = {"drain_timeout": "2.5s"}
    data["compliance"] = {"window": "3d12h", "drill_max_age": 0.25}
    cfg = parse_config(yaml.safe_dump(data), source="a.yaml")
    again = parse_config(yaml.safe_dump(reference_data(cfg)), source="a.yaml")
    assert again.model_copy(update={"digest": cfg.digest}) == cfg
    assert again.assets["weights"].validators[0].timeout == timedelta(milliseconds=1500)
    assert again.compliance.drill_max_age == timedelta(milliseconds=250)


# --- load_config ----------------------------------------------------------------------------------


def test_load_config_resolves_the_source(tmp_path: Path) -> None:
    """load_config records the absolute path it read, so relative paths resolve beside the file."""
    path = tmp_path / "conf" / "drwatch.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(estate()))
    cfg = load_config(path)
    assert cfg.source == str(path.resolve())
    assert cfg.sqlite_path() == path.parent / "state.sqlite"


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8", "below-a-file"])
def test_unreadable_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    """A file that cannot be read is a ConfigError naming the file, not a traceback."""
    path = tmp_path / "drwatch.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b"assets: {\xff\xfe}\n")
    elif kind == "below-a-file":
        path.write_text("x: 1\n")
        path = path / "inner.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    [problem] = info.value.problems
    assert problem.path == ""
    assert problem.message.startswith("cannot read" if kind != "not-utf8" else "not UTF-8")


# --- check-config (real subprocess) ---------------------------------------------------------------

SECRET = "postgresql://drwatch:Sup3r-s3cret@db.internal:5432/drwatch"
SECRET_ENV = {"DRWATCH_TEST_SECRET_DSN": SECRET}


def _secret_store(**extra: Any) -> dict[str, Any]:
    return {"postgres": {"dsn_env": "DRWATCH_TEST_SECRET_DSN", **extra}}


def _kitchen_sink() -> dict[str, Any]:
    data = estate()
    asset = data["assets"]["weights"]
    asset["rpo"] = "5 minutes"
    asset["rto"] = True
    asset["production"]["location"] = "nowhere"
    asset["copies"][0]["bogus"] = 1
    asset["copies"][1]["location"] = "vault"
    asset["copies"].append({"location": "near"})
    asset["validators"] = [
        {"kind": "restore"},
        {"kind": "replica", "name": "cron", "schedule": {"cron": "61 * * * *"}},
        {"kind": "replica", "name": "jitter", "schedule": {"every": "1m", "jitter": "5m"}},
        {"kind": "replica", "name": "neg", "timeout": "-1s"},
    ]
    data["http"]["listen"] = "127.0.0.1"
    data["store"] = {"postgres": {}, "bogus": 1}
    return data


CLI_CASES: dict[str, tuple[dict[str, Any] | str, list[str]]] = {
    "malformed-yaml": ("store:\n  sqlite: x.db\nassets: [1, 2\nhttp: {}\n", ["line 3, column 9: malformed YAML"]),
    "not-a-mapping": ("- a\n- b\n", ["the top level must be a mapping of keys"]),
    "both-stores": (
        modified(("store",), {"sqlite": "x.db", **_secret_store()}),
        ["store: choose one store backend: sqlite or postgres, not both"],
    ),
    "kitchen-sink": (
        _kitchen_sink(),
        [
            "store.postgres: set exactly one of dsn_env (environment variable) or dsn_file (file path)",
            "store.bogus: unknown key (not allowed here)",
            "http.listen: listen must be HOST:PORT (e.g. 127.0.0.1:10099), got '127.0.0.1'",
            "assets.weights.rpo: invalid duration '5 minutes': expected e.g. 30s, 15m, 24h, 7d, 1h30m",
            "assets.weights.rto: a duration must be text like 30s, 15m, 24h, 7d",
            "assets.weights.copies[0].bogus: unknown key (not allowed here)",
            "assets.weights.production.location: unknown location 'nowhere' (known: far, near, prod)",
            "assets.weights.copies[1].location: unknown location 'vault' (known: far, near, prod)",
            "assets.weights.copies[2]: copy 'near' appears twice",
            "assets.weights.validators[0].kind: unknown validator kind 'restore' (known: ",
            "assets.weights.validators[1].schedule.cron: invalid cron expression '61 * * * *'",
            "assets.weights.validators[2].schedule: 'jitter' cannot exceed 'every'",
            "assets.weights.validators[3].timeout: a duration cannot be negative",
        ],
    ),
}
VALID = "valid"  # plus: summary and json of a valid config using the secret, and a missing file
CliRuns = dict[str, tuple[Path, subprocess.CompletedProcess[str]]]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> CliRuns:
    """Every check-config invocation of this module, run once (each is a real `python -m drwatch`)."""
    tmp = tmp_path_factory.mktemp("check-config")
    files: dict[str, dict[str, Any] | str] = {name: data for name, (data, _) in CLI_CASES.items()}
    files[VALID] = modified(("store",), _secret_store())
    runs: CliRuns = {}
    for name, data in files.items():
        path = tmp / f"{name}.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        runs[name] = (path, run_cli("check-config", str(path), env=SECRET_ENV))
    runs["json"] = (
        tmp / f"{VALID}.yaml",
        run_cli("check-config", "--output", "json", str(tmp / f"{VALID}.yaml"), env=SECRET_ENV),
    )
    runs["missing"] = (tmp / "missing.yaml", run_cli("check-config", str(tmp / "missing.yaml")))
    return runs


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_check_config_cli_lists_every_problem_and_exits_78(cli_runs: CliRuns, case: str) -> None:
    """`drwatch check-config` exits 78 and prints each problem on its own stderr line, path first."""
    path, proc = cli_runs[case]
    expected = CLI_CASES[case][1]
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == f"drwatch: invalid configuration {path.resolve()}:"
    problem_lines = [line.strip() for line in lines[1:]]
    assert len(problem_lines) == len(expected), proc.stderr
    for want in expected:
        assert any(line.startswith(want) for line in problem_lines), (want, proc.stderr)
    assert "Traceback" not in proc.stderr
    for internal in INTERNALS:
        assert internal not in proc.stderr


def test_check_config_cli_missing_file(cli_runs: CliRuns) -> None:
    """A missing file exits 78 with a one-line reason naming the file, not a traceback."""
    path, proc = cli_runs["missing"]
    assert proc.returncode == EXIT_CONFIG
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"drwatch: invalid configuration {path}:",
        "  cannot read: No such file or directory",
    ]


def test_check_config_cli_valid_prints_a_summary(cli_runs: CliRuns) -> None:
    """A valid config exits 0 with a summary of store, listener, locations and assets on stdout; its only
    warnings are that the example paths (/srv/...) do not exist on this machine."""
    path, proc = cli_runs[VALID]
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr.splitlines() == [
        f"drwatch: warning: locations.{name}.path: /srv/{name} not found: checks reading it end as `error` "
        "(location_unavailable) until it is mounted and readable" for name in ("prod", "near", "far")]
    out = proc.stdout.splitlines()
    assert out[0] == f"{path}: OK"
    assert "  store: postgres" in out
    assert "  http: 127.0.0.1:0" in out
    assert "  locations: 3" in out
    assert "    far: filesystem site=dc-b media=hdd" in out
    assert "  assets: 1" in out
    assert "    weights: 3 copies (production included); replica(replica)" in out


def test_check_config_cli_json_output(cli_runs: CliRuns) -> None:
    """`--output json` prints the validated config as JSON: defaults filled in, durations as text."""
    path, proc = cli_runs["json"]
    assert proc.returncode == EXIT_OK, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["assets"]["weights"]["rpo"] == "1d"
    assert doc["assets"]["weights"]["copies"][1] == {"location": "far", "prefix": "models/llm", "name": None}
    assert doc["compliance"]["copies"] == 3
    assert doc["limits"]["drain_timeout"] == "30s"
    assert "source" not in doc
    assert "digest" not in doc
    expected = load_config(path)
    assert parse_config(json.dumps(doc), source=expected.source).model_copy(update={"digest": expected.digest}) == (
        expected
    )


def test_check_config_cli_never_prints_a_secret(cli_runs: CliRuns) -> None:
    """A DSN in the environment named by dsn_env appears in no check-config output; JSON shows the name only."""
    for name in (VALID, "json", "both-stores"):
        _path, proc = cli_runs[name]
        assert "Sup3r-s3cret" not in proc.stdout + proc.stderr, name
    assert cli_runs["both-stores"][1].returncode == EXIT_CONFIG
    doc = json.loads(cli_runs["json"][1].stdout)
    assert doc["store"]["postgres"] == {
        "dsn_env": "DRWATCH_TEST_SECRET_DSN",
        "dsn_file": None,
        "pool_max": 5,
        "connect_timeout": "10s",
    }


def test_a_secret_pasted_into_a_reference_field_is_not_echoed(tmp_path: Path) -> None:
    """`access_key_id_env: AKIA...` (the key itself instead of a variable name) or a token pasted into a `*_file`
    field: the error names the field but never repeats the value."""
    from drwatch.core.errors import ConfigError
    from drwatch.core.secrets import read_secret

    for env, file in (("AKIAIOSFODNN7EXAMPLE", None), (None, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")):
        with pytest.raises(ConfigError) as info:
            read_secret("locations.s3.secret_access_key", env=env, file=file, base_dir=tmp_path)
        text = str(info.value) + repr(info.value.problems)
        assert "locations.s3.secret_access_key" in text
        assert "AKIAIOSFODNN7EXAMPLE" not in text and "wJalrXUtnFEMI" not in text
    with pytest.raises(ConfigError) as info:
        read_secret("x", env="DRWATCH_SURELY_UNSET_VAR", file=None, base_dir=tmp_path)
    assert "DRWATCH_SURELY_UNSET_VAR" in str(info.value.problems)  # a real variable name is shown


@pytest.mark.parametrize(("path", "value"), [
    (("assets", "weights", "validators", 0, "timeout"), "0s"),
    (("assets", "weights", "validators", 0, "max_age"), "0s"),
    (("limits", "default_timeout"), "0s"),
])
def test_zero_timeouts_are_refused(path: Sequence[Key], value: str) -> None:
    """A timeout of zero is not 'no timeout' (there is none) nor silently the default: it is an error."""
    where, message = only_problem(modified(path, value))
    assert where == ".".join(str(p) for p in path).replace(".0.", "[0].")
    assert "above zero" in message


@pytest.mark.parametrize(("copy", "words"), [
    ({"location": "prod", "prefix": "models/llm"}, "production itself"),
    ({"location": "alias", "prefix": "models/llm"}, "production itself"),  # /srv/x/../prod: the same directory
    ({"location": "far", "prefix": "models/llm/", "name": "far-again"}, "the same place as copy 'far'"),
])
def test_a_copy_that_is_production_or_another_copy_is_refused(copy: dict[str, Any], words: str) -> None:
    """A copy resolving to production's directory (same location and prefix, or a path that normalises to it)
    or to another copy's is no copy: 3-2-1 would count one place twice."""
    data = estate()
    data["locations"]["alias"] = {"kind": "filesystem", "path": "/srv/x/../prod", "site": "dc-c"}
    data["assets"]["weights"]["copies"].append(copy)
    where, message = only_problem(data)
    assert where == "assets.weights.copies[2]" and words in message, (where, message)


def test_a_symlinked_copy_of_production_is_refused(tmp_path: Path) -> None:
    """The same through a symbolic link: the real directories are compared."""
    (tmp_path / "prod" / "models" / "llm").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "prod")
    data = estate()
    data["locations"]["prod"]["path"] = str(tmp_path / "prod")
    data["locations"]["near"]["path"] = str(tmp_path / "link")
    where, message = only_problem(data)
    assert where == "assets.weights.copies[0]" and "production itself" in message
