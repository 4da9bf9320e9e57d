"""3-2-1-1-0 compliance: ``evaluate(config, snapshot, now)`` is a pure function with pass/fail/unknown rules.

Configs come from ``parse_config``; snapshots are built from real ``Result``/``CopyReport`` objects folded
into ``ValidatorStats`` the way the store does it. ``now`` is fixed, so nothing here depends on the clock.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import pytest
import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.model import Ack, Attestation, CopyReport, CopyState, Outcome, Result
from drwatch.state.compliance import RULES, AssetVerdict, RuleState, evaluate
from drwatch.state.snapshot import Snapshot
from drwatch.store.base import ValidatorStats

NOW = 1_700_000_000.0
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

PASS, FAIL, UNKNOWN = RuleState.PASS, RuleState.FAIL, RuleState.UNKNOWN

# Declared facts of the test estate, mirrored into the reports a replica run would produce.
LOCATIONS: dict[str, dict[str, Any]] = {
    "prod": {"kind": "filesystem", "path": "/srv/prod", "site": "dc-a", "region": "eu-west", "media": "ssd"},
    "near": {"kind": "filesystem", "path": "/srv/near", "site": "dc-a", "region": "eu-west", "media": "ssd"},
    "far": {"kind": "filesystem", "path": "/srv/far", "site": "dc-b", "region": "eu-central", "media": "hdd"},
    "vault": {"kind": "filesystem", "path": "/mnt/tape", "site": "bunker", "media": "tape", "offline": True},
}
COPY_LOCATION = {"production": "prod", "near": "near", "far": "far", "vault": "vault"}


def config(
    *,
    copies: Iterable[str] = ("near", "far"),
    compliance: Mapping[str, Any] | None = None,
    validators: list[dict[str, Any]] | None = None,
    locations: Mapping[str, Mapping[str, Any]] | None = None,
    rpo: str = "1d",
) -> Config:
    """One asset 'weights' on 'prod' with the given copies; validator 'replica' results go stale after 6h."""
    locs = copy.deepcopy(LOCATIONS)
    for name, over in (locations or {}).items():
        locs[name].update(over)
    data = {
        "locations": locs,
        "assets": {
            "weights": {
                "rpo": rpo,
                "production": {"location": "prod"},
                "copies": [{"location": COPY_LOCATION[c]} for c in copies],
                "validators": validators if validators is not None else [{"kind": "replica", "max_age": "6h"}],
            },
        },
        "compliance": dict(compliance or {}),
    }
    return parse_config(yaml.safe_dump(data), source="compliance.yaml")


def report(
    name: str,
    state: CopyState = CopyState.VERIFIED,
    *,
    rp: float | None = NOW - HOUR,
    immutable: bool | None = False,
    **over: Any,
) -> CopyReport:
    """What a replica run reports about one copy, declared facts taken from LOCATIONS."""
    loc = COPY_LOCATION[name]
    decl = LOCATIONS[loc]
    fields: dict[str, Any] = {
        "copy": name,
        "location": loc,
        "role": "production" if name == "production" else "copy",
        "state": state,
        "recovery_point": rp if state == CopyState.VERIFIED else None,
        "media": decl.get("media", "unknown"),
        "site": decl.get("site", ""),
        "region": decl.get("region", ""),
        "provider": "local",
        "immutable": immutable,
        "offline": bool(decl.get("offline", False)),
    }
    fields.update(over)
    return CopyReport(**fields)


def run(
    *copies: CopyReport,
    outcome: Outcome = Outcome.OK,
    at: float = NOW - 10 * MINUTE,
    validator: str = "replica",
    rp: float | None = NOW - HOUR,
) -> Result:
    """A finished validator run of asset 'weights' (30s long, ending at ``at``)."""
    return Result(
        run_id=f"{validator}-{at}",
        asset="weights",
        validator=validator,
        kind="replica",
        outcome=outcome,
        started_at=at - 30,
        finished_at=at,
        copies=copies,
        recovery_point=rp,
    )


def all_verified(*extra: CopyReport, copies: Iterable[str] = ("near", "far"), **kw: Any) -> tuple[CopyReport, ...]:
    """Reports with production and every copy verified, then ``extra`` replacing same-named ones."""
    replaced = {r.copy: r for r in extra}
    names = ["production", *copies]
    return tuple(replaced.get(n) or report(n, **kw) for n in names)


def snapshot(cfg: Config, *results: Result, attestations: Iterable[Attestation] = ()) -> Snapshot:
    """A snapshot as the store would build it: results folded in order into per-validator stats."""
    stats: dict[tuple[str, str], ValidatorStats] = {}
    for res in results:
        key = (res.asset, res.validator)
        stats[key] = stats.get(key, ValidatorStats(res.asset, res.validator)).with_result(res, time.time())
    return Snapshot(cfg, validators=stats, attestations={(a.asset, a.copy): a for a in attestations})


def verdict(cfg: Config, *results: Result, attestations: Iterable[Attestation] = (), now: float = NOW) -> AssetVerdict:
    verdicts = evaluate(cfg, snapshot(cfg, *results, attestations=attestations), now)
    assert set(verdicts) == set(cfg.assets)
    return verdicts["weights"]


def attest(copy_name: str = "vault", *, age: float = DAY, rp: float | None = NOW - 2 * HOUR) -> Attestation:
    return Attestation("weights", copy_name, "checked by hand", NOW - age, rp)


def states(v: AssetVerdict) -> dict[str, RuleState]:
    return {name: rule.state for name, rule in v.rules.items()}


# --- the whole verdict ----------------------------------------------------------------------------


def healthy() -> tuple[Config, Result]:
    """Production, near, far verified; far is off-site on other media; the offline vault freshly attested."""
    cfg = config(copies=("near", "far", "vault"))
    res = run(*all_verified(report("vault", CopyState.OFFLINE), copies=("near", "far", "vault")))
    return cfg, res


def test_healthy_asset_passes_every_rule_and_is_compliant() -> None:
    """Every rule passes with fresh, verified copies on two media, one off-site, one offline-attested."""
    cfg, res = healthy()
    v = verdict(cfg, res, attestations=[attest()])
    assert states(v) == dict.fromkeys(RULES, PASS)
    assert v.compliant
    assert v.copies_verified == 4
    assert v.recovery_point == NOW - HOUR
    assert v.rules["copies"].detail == "4/3 verified (production, near, far, vault)"
    assert v.rules["media"].detail.startswith("3/2 media among verified copies (hdd, ssd, tape)")
    assert v.rules["restore_errors"].detail == "1 validator(s) ok"


def test_one_unknown_rule_makes_the_asset_not_compliant() -> None:
    """`compliant` is true only when every rule passes: one unknown rule is enough to make it false."""
    cfg, res = healthy()
    errored = run(*res.copies, outcome=Outcome.ERROR)
    v = verdict(cfg, errored, attestations=[attest()])
    assert states(v)["restore_errors"] == UNKNOWN
    assert [s for s in states(v).values() if s != PASS] == [UNKNOWN]
    assert not v.compliant


def test_one_failing_rule_makes_the_asset_not_compliant() -> None:
    """A single failing rule (here: immutable, the vault is not attested) makes the asset not compliant."""
    cfg, res = healthy()
    v = verdict(cfg, res)
    assert states(v)["immutable"] == FAIL
    assert not v.compliant


def test_evaluate_is_pure_and_uses_only_the_given_now() -> None:
    """Same inputs, same verdicts; the snapshot is not changed; a later `now` (not the clock) makes it stale."""
    cfg, res = healthy()
    snap = snapshot(cfg, res, attestations=[attest()])
    before = (dict(snap.validators), dict(snap.attestations), snap.generation)
    first = evaluate(cfg, snap, NOW)
    assert evaluate(cfg, snap, NOW) == first
    assert (dict(snap.validators), dict(snap.attestations), snap.generation) == before
    assert first["weights"].compliant
    later = evaluate(cfg, snap, NOW + 7 * HOUR)["weights"]
    assert states(later)["copies"] == UNKNOWN
    assert not later.compliant


def test_every_configured_asset_gets_a_verdict() -> None:
    """evaluate returns one verdict per configured asset, also for assets nothing ever reported on."""
    data = {
        "locations": LOCATIONS,
        "assets": {
            name: {
                "rpo": "1d",
                "production": {"location": "prod"},
                "copies": [{"location": "near"}, {"location": "far"}],
                "validators": [{"kind": "replica"}],
            }
            for name in ("weights", "index", "docs")
        },
    }
    cfg = parse_config(yaml.safe_dump(data))
    verdicts = evaluate(cfg, snapshot(cfg, run(*all_verified())), NOW)
    assert sorted(verdicts) == ["docs", "index", "weights"]
    assert set(verdicts["weights"].rules) == set(RULES)
    assert states(verdicts["index"]) == dict.fromkeys(RULES, UNKNOWN)


# --- never ran / stale / errored: unknown, never pass ---------------------------------------------


def test_never_run_validator_makes_every_rule_unknown() -> None:
    """Before any check has run nothing is proven or disproven: every rule is unknown, none passes."""
    v = verdict(config())
    assert states(v) == dict.fromkeys(RULES, UNKNOWN)
    assert not v.compliant
    assert "production: never checked" in v.rules["copies"].detail
    assert v.rules["restore_errors"].detail == "replica: never ran"
    assert v.copies_verified == 0
    assert v.recovery_point is None


def test_results_older_than_max_age_make_rules_unknown() -> None:
    """A result older than the validator's max_age proves nothing any more: the rules it supports are unknown."""
    res = run(*all_verified(), at=NOW - 7 * HOUR)
    v = verdict(config(), res)
    assert states(v) == dict.fromkeys(RULES, UNKNOWN)
    assert "far: last check 7h ago is stale" in v.rules["copies"].detail
    assert v.rules["restore_errors"].detail == "replica: stale (last run 7h ago)"
    assert "far: last check 7h ago is stale" in v.rules["immutable"].detail


def test_results_within_max_age_still_count() -> None:
    """Just inside max_age the same result still proves the copies (the boundary is max_age, not less)."""
    res = run(*all_verified(), at=NOW - 6 * HOUR + MINUTE)
    v = verdict(config(), res)
    assert states(v)["copies"] == PASS
    assert states(v)["restore_errors"] == PASS


def test_compliance_drill_max_age_overrides_the_default_max_age() -> None:
    """compliance.drill_max_age sets how old a result may be for validators without their own max_age."""
    cfg = config(validators=[{"kind": "replica"}], compliance={"drill_max_age": "30m"})
    res = run(*all_verified(), at=NOW - HOUR)
    v = verdict(cfg, res)
    assert states(v)["copies"] == UNKNOWN
    assert states(v)["restore_errors"] == UNKNOWN
    assert "stale" in v.rules["restore_errors"].detail


def test_copy_whose_last_check_errored_is_unknown() -> None:
    """A copy the latest run could not read is unknown (not failed, not verified)."""
    res = run(*all_verified(report("far", CopyState.ERROR)), outcome=Outcome.ERROR)
    v = verdict(config(), res)
    far = next(c for c in v.copies if c.name == "far")
    assert (far.status, far.reason) == ("unknown", "latest check could not prove it (error: see its findings)")
    assert states(v)["copies"] == UNKNOWN
    assert "far: latest check could not prove it (error: see its findings)" in v.rules["copies"].detail


def test_run_that_errored_without_copy_reports_leaves_copies_unknown() -> None:
    """A run that errored before reporting any copy leaves every copy unknown, and says the run errored."""
    v = verdict(config(), run(outcome=Outcome.ERROR, rp=None))
    assert states(v)["copies"] == UNKNOWN
    assert states(v)["restore_errors"] == UNKNOWN
    assert "not reported by the latest check (replica: error)" in v.rules["copies"].detail
    assert v.rules["restore_errors"].detail == "replica: latest run error"


def test_errored_run_after_a_good_one_does_not_keep_the_old_proof() -> None:
    """Only the latest result counts: a good run followed by an errored one is unknown, not pass."""
    good = run(*all_verified(), at=NOW - 2 * HOUR)
    bad = run(*all_verified(report("far", CopyState.ERROR)), outcome=Outcome.ERROR, at=NOW - HOUR)
    v = verdict(config(), good, bad)
    assert states(v)["copies"] == UNKNOWN
    assert states(v)["restore_errors"] == UNKNOWN


# --- copies ---------------------------------------------------------------------------------------


def test_copies_pass_when_production_and_copies_are_verified() -> None:
    """Production counts as one copy: production + two verified copies make 3."""
    v = verdict(config(), run(*all_verified()))
    assert v.rules["copies"].state == PASS
    assert v.rules["copies"].detail == "3/3 verified (production, near, far)"


def test_copies_fail_when_a_copy_is_bad() -> None:
    """A copy whose latest check found it bad does not count; with nothing unknown left, the rule fails."""
    res = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED)
    rule = verdict(config(), res).rules["copies"]
    assert rule.state == FAIL
    assert rule.detail == "2/3 verified (production, near); far: latest check found it bad"


def test_copies_unknown_when_the_missing_proof_could_still_come() -> None:
    """Two proven, one unknown, three required: unknown (the unknown copy could still be good)."""
    res = run(*all_verified(report("far", CopyState.ERROR)), outcome=Outcome.ERROR)
    rule = verdict(config(), res).rules["copies"]
    assert rule.state == UNKNOWN
    assert rule.detail.startswith("2/3 verified (production, near)")


def test_copies_fail_even_with_unknowns_when_the_requirement_is_out_of_reach() -> None:
    """One failed plus one unknown copy: even if the unknown were good only 2 of 3 — fail, not unknown."""
    res = run(
        report("production"), report("near", CopyState.FAILED), report("far", CopyState.ERROR), outcome=Outcome.FAILED
    )
    assert verdict(config(), res).rules["copies"].state == FAIL


def test_verified_copy_older_than_the_rpo_does_not_count() -> None:
    """A copy that verified, but holds a recovery point older than the RPO, is not a copy of the newest state."""
    res = run(*all_verified(report("far", rp=NOW - 2 * DAY)))
    v = verdict(config(rpo="1d"), res)
    assert v.rules["copies"].state == FAIL
    assert "far: holds a recovery point older than the RPO" in v.rules["copies"].detail
    assert v.copies_verified == 2


def test_verified_copy_without_recovery_point_does_not_count() -> None:
    """A verified report without a recovery point cannot prove the copy is within the RPO."""
    res = run(*all_verified(report("far", rp=None)))
    assert verdict(config(), res).rules["copies"].state == FAIL


def test_required_copies_is_configurable() -> None:
    """compliance.copies sets the requirement: with 2 required, production + one good copy pass."""
    res = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED)
    rule = verdict(config(compliance={"copies": 2}), res).rules["copies"]
    assert rule.state == PASS
    assert rule.detail.startswith("2/2 verified")


def test_required_copies_above_what_is_configured_fails() -> None:
    """Requiring more copies than the asset has fails, however good they are."""
    rule = verdict(config(compliance={"copies": 4}), run(*all_verified())).rules["copies"]
    assert rule.state == FAIL
    assert rule.detail.startswith("3/4 verified")


def test_copy_checked_by_the_newer_of_two_validators_wins() -> None:
    """With two validators reporting on a copy, the newer report decides its state."""
    cfg = config(
        validators=[{"kind": "replica", "max_age": "6h"}, {"kind": "replica", "name": "deep", "max_age": "6h"}]
    )
    old_bad = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED, at=NOW - 2 * HOUR)
    new_good = run(*all_verified(), at=NOW - HOUR, validator="deep")
    assert verdict(cfg, old_bad, new_good).rules["copies"].state == PASS
    old_good = run(*all_verified(), at=NOW - 2 * HOUR, validator="deep")
    new_bad = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED, at=NOW - HOUR)
    assert verdict(cfg, old_good, new_bad).rules["copies"].state == FAIL


# --- media ----------------------------------------------------------------------------------------


def test_media_pass_with_two_distinct_media_among_verified_copies() -> None:
    """ssd (production, near) and hdd (far) are two media; duplicates count once."""
    rule = verdict(config(), run(*all_verified())).rules["media"]
    assert rule.state == PASS
    assert rule.detail == "2/2 media among verified copies (hdd, ssd)"


def test_media_fail_when_all_verified_copies_share_one_media() -> None:
    """Three verified copies on the same media are one media."""
    res = run(*all_verified(report("far", media="ssd")))
    rule = verdict(config(), res).rules["media"]
    assert rule.state == FAIL
    assert rule.detail.startswith("1/2 media among verified copies (ssd)")


def test_media_of_a_failed_copy_does_not_count() -> None:
    """Only verified copies count: the hdd copy that failed its check adds no medium."""
    res = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED)
    rule = verdict(config(), res).rules["media"]
    assert rule.state == FAIL
    assert "(ssd)" in rule.detail


def test_media_of_a_stale_verified_copy_does_not_count() -> None:
    """A verified copy outside the RPO adds no medium either."""
    res = run(*all_verified(report("far", rp=NOW - 3 * DAY)))
    assert verdict(config(), res).rules["media"].state == FAIL


def test_media_unknown_when_an_unknown_copy_could_add_a_medium() -> None:
    """ssd proven, the hdd copy errored: a second medium is possible but unproven — unknown, with the reason."""
    res = run(*all_verified(report("far", CopyState.ERROR)), outcome=Outcome.ERROR)
    rule = verdict(config(), res).rules["media"]
    assert rule.state == UNKNOWN
    assert rule.detail.startswith("1/2 media among verified copies (ssd)")
    assert "far: latest check could not prove it (error: see its findings)" in rule.detail


def test_media_uses_the_reported_media_over_the_declared_one() -> None:
    """The media a validator reports (observed) is what counts, not only what the location declares."""
    res = run(*all_verified(report("near", media="tape")))
    rule = verdict(config(compliance={"media": 3}), res).rules["media"]
    assert rule.state == PASS
    assert "(hdd, ssd, tape)" in rule.detail


def test_media_unknown_media_is_not_a_distinct_medium() -> None:
    """A verified copy whose media is neither declared nor observed does not count as another medium."""
    res = run(*all_verified(report("far", media="unknown")))
    rule = verdict(config(), res).rules["media"]
    assert rule.state == FAIL
    assert "media not known for: far" in rule.detail


# --- offsite --------------------------------------------------------------------------------------


def test_offsite_pass_with_a_verified_copy_on_another_site() -> None:
    """far (dc-b) differs from production's site (dc-a): one verified copy off-site."""
    rule = verdict(config(), run(*all_verified())).rules["offsite"]
    assert rule.state == PASS
    assert rule.detail == "1/1 verified off-site (far)"


def test_offsite_fail_when_every_good_copy_shares_the_production_site() -> None:
    """near shares site and region with production; with far bad, nothing is off-site."""
    res = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED)
    rule = verdict(config(), res).rules["offsite"]
    assert rule.state == FAIL
    assert rule.detail.startswith("0/1 verified off-site (none)")


def test_offsite_unknown_when_the_off_site_copy_could_not_be_checked() -> None:
    """The only off-site copy errored: unknown, naming the copy and why."""
    res = run(*all_verified(report("far", CopyState.ERROR)), outcome=Outcome.ERROR)
    rule = verdict(config(), res).rules["offsite"]
    assert rule.state == UNKNOWN
    assert "far: latest check could not prove it (error: see its findings)" in rule.detail


def test_offsite_by_region_alone() -> None:
    """Same declared site, different region: off-site."""
    res = run(*all_verified(report("far", site="dc-a", region="us-east")))
    assert verdict(config(), res).rules["offsite"].state == PASS


def test_offsite_by_site_alone() -> None:
    """No regions declared, different site: off-site."""
    res = run(*all_verified(report("production", region=""), report("far", region="")))
    assert verdict(config(), res).rules["offsite"].state == PASS


def test_offsite_needs_production_to_declare_a_site_or_region() -> None:
    """Without a site or region on production nothing can be shown off-site, and the detail says why."""
    res = run(*all_verified(report("production", site="", region="")))
    rule = verdict(config(), res).rules["offsite"]
    assert rule.state == FAIL
    assert "production declares no site/region" in rule.detail


def test_offsite_same_site_and_region_is_not_off_site() -> None:
    """A copy in the same site and region as production is on-site, whatever its media."""
    cfg = config(copies=("near",), compliance={"copies": 2, "media": 1})
    rule = verdict(cfg, run(*all_verified(copies=("near",)))).rules["offsite"]
    assert rule.state == FAIL


# --- immutable ------------------------------------------------------------------------------------


def test_immutable_pass_with_a_verified_locked_copy() -> None:
    """A verified copy whose objects were observed locked counts as immutable."""
    res = run(*all_verified(report("far", immutable=True)))
    rule = verdict(config(), res).rules["immutable"]
    assert rule.state == PASS
    assert rule.detail == "1/1 immutable or offline (far)"


def test_immutable_fail_when_no_copy_is_locked_or_offline() -> None:
    """Every copy checked and none locked, no offline copy: fail."""
    rule = verdict(config(), run(*all_verified())).rules["immutable"]
    assert rule.state == FAIL
    assert rule.detail.startswith("0/1 immutable or offline (none)")


def test_immutable_unknown_when_lock_state_could_not_be_observed() -> None:
    """A copy that errored and whose lock state is not known could be the immutable one: unknown."""
    res = run(*all_verified(report("far", CopyState.ERROR, immutable=None)), outcome=Outcome.ERROR)
    rule = verdict(config(), res).rules["immutable"]
    assert rule.state == UNKNOWN
    assert "far: latest check could not prove it (error: see its findings)" in rule.detail


def test_locked_copy_older_than_the_rpo_is_not_immutable_proof() -> None:
    """A locked copy holding an old recovery point does not protect the newest state."""
    res = run(*all_verified(report("far", immutable=True, rp=NOW - 2 * DAY)))
    assert verdict(config(), res).rules["immutable"].state == FAIL


def test_offline_copy_with_fresh_attestation_counts_for_immutable_and_copies() -> None:
    """An offline copy attested recently, holding a recovery point within the RPO, counts for both rules."""
    cfg = config(copies=("near", "vault"))
    res = run(*all_verified(report("vault", CopyState.OFFLINE), copies=("near", "vault")))
    v = verdict(cfg, res, attestations=[attest(age=10 * DAY, rp=NOW - 5 * HOUR)])
    vault = next(c for c in v.copies if c.name == "vault")
    assert vault.status == "attested"
    assert vault.reason == "offline, attested 10d ago"
    assert v.rules["immutable"].state == PASS
    assert v.rules["immutable"].detail == "1/1 immutable or offline (vault)"
    assert v.rules["copies"].state == PASS
    assert "vault" in v.rules["copies"].detail


def test_offline_copy_with_stale_attestation_counts_for_nothing() -> None:
    """An attestation older than compliance.offline_attestation_max_age proves neither immutable nor copies."""
    cfg = config(copies=("near", "vault"), compliance={"offline_attestation_max_age": "7d"})
    res = run(*all_verified(report("vault", CopyState.OFFLINE), copies=("near", "vault")))
    v = verdict(cfg, res, attestations=[attest(age=8 * DAY)])
    assert v.rules["immutable"].state == FAIL
    assert v.rules["copies"].state == FAIL
    assert "vault: offline copy without a fresh attestation" in v.rules["copies"].detail


def test_offline_copy_without_attestation_fails_even_before_any_run() -> None:
    """An offline copy needs an attestation; without one it is failed, never unknown-waiting or pass."""
    v = verdict(config(copies=("vault",)))
    vault = next(c for c in v.copies if c.name == "vault")
    assert vault.status == "failed"
    assert "drwatch attest" in vault.reason


def test_attested_recovery_point_outside_the_rpo_counts_for_immutable_only() -> None:
    """A fresh attestation of an old recovery point: the copy is offline (immutable) but not a current copy."""
    cfg = config(copies=("near", "vault"))
    res = run(*all_verified(report("vault", CopyState.OFFLINE), copies=("near", "vault")))
    v = verdict(cfg, res, attestations=[attest(age=DAY, rp=NOW - 3 * DAY)])
    assert v.rules["immutable"].state == PASS
    assert v.rules["copies"].state == FAIL
    assert "2/3 verified (production, near)" in v.rules["copies"].detail


def test_attestation_without_recovery_point_does_not_count_as_a_copy() -> None:
    """An attestation that names no recovery point cannot prove the copy is within the RPO."""
    cfg = config(copies=("near", "vault"))
    res = run(*all_verified(report("vault", CopyState.OFFLINE), copies=("near", "vault")))
    v = verdict(cfg, res, attestations=[attest(rp=None)])
    assert v.rules["copies"].state == FAIL
    assert v.rules["immutable"].state == PASS


def test_fresh_attestation_stands_in_when_the_last_report_is_stale() -> None:
    """An offline copy's fresh attestation still counts when the validator's last report went stale."""
    cfg = config(copies=("vault",), compliance={"copies": 1, "media": 1, "offsite": 0})
    res = run(*all_verified(report("vault", CopyState.OFFLINE), copies=("vault",)), at=NOW - 8 * HOUR)
    v = verdict(cfg, res, attestations=[attest(age=HOUR)])
    vault = next(c for c in v.copies if c.name == "vault")
    assert vault.status == "attested"
    assert v.rules["immutable"].state == PASS
    assert v.rules["copies"].state == PASS


def test_mounted_offline_copy_is_immutable_only_with_a_fresh_attestation() -> None:
    """An offline copy that happened to be mounted and verified is immutable only with a fresh attestation."""
    cfg = config(copies=("vault",), compliance={"copies": 2})
    res = run(*all_verified(copies=("vault",)))
    assert verdict(cfg, res).rules["immutable"].state == FAIL
    assert verdict(cfg, res, attestations=[attest(age=2 * DAY)]).rules["immutable"].state == PASS
    assert verdict(cfg, res, attestations=[attest(age=40 * DAY)]).rules["immutable"].state == FAIL


# --- restore_errors -------------------------------------------------------------------------------


def test_restore_errors_pass_when_the_latest_runs_succeeded() -> None:
    """Fresh ok runs and no failure in the window: pass."""
    rule = verdict(config(), run(*all_verified())).rules["restore_errors"]
    assert (rule.state, rule.detail) == (PASS, "1 validator(s) ok")


def test_restore_errors_fail_when_the_latest_run_failed() -> None:
    """A latest run that failed fails the rule, naming the validator."""
    res = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED)
    rule = verdict(config(), res).rules["restore_errors"]
    assert (rule.state, rule.detail) == (FAIL, "replica: latest run failed")


@pytest.mark.parametrize("outcome", [Outcome.ERROR, Outcome.TIMEOUT, Outcome.CANCELLED])
def test_restore_errors_unknown_when_the_latest_run_did_not_finish_checking(outcome: Outcome) -> None:
    """error, timeout and cancelled prove nothing either way: unknown, with the outcome in the detail."""
    rule = verdict(config(), run(outcome=outcome, rp=None)).rules["restore_errors"]
    assert (rule.state, rule.detail) == (UNKNOWN, f"replica: latest run {outcome.value}")


def test_failure_proven_fixed_by_a_later_ok_run_passes_with_its_history() -> None:
    """A failed run 2 days ago, inside the 7d window, followed by an ok run of the same validator: the repair
    is proven, the rule passes at once (no waiting out the window) and the detail keeps the failure."""
    failed = run(outcome=Outcome.FAILED, at=NOW - 2 * DAY)
    ok = run(*all_verified(), at=NOW - 10 * MINUTE)
    v = verdict(config(), failed, ok)
    assert v.rules["restore_errors"].state == PASS
    assert v.rules["restore_errors"].detail == "1 validator(s) ok; history: replica: failed 2d ago, ok since 10m ago"
    assert v.rules["copies"].state == PASS


def test_failure_not_proven_fixed_keeps_failing_for_the_window() -> None:
    """A failure followed only by runs that could not check (error) is not proven fixed: it keeps the rule
    failing for compliance.window, and no longer counts after it."""
    failed = run(outcome=Outcome.FAILED, at=NOW - 2 * DAY)
    errored = run(outcome=Outcome.ERROR, at=NOW - 10 * MINUTE, rp=None)
    rule = verdict(config(), failed, errored).rules["restore_errors"]
    assert rule.state == FAIL
    assert rule.detail == "replica: failed 2d ago (window 7d; not ok since)"
    assert verdict(config(compliance={"window": "1d"}), failed, errored).rules["restore_errors"].state == UNKNOWN


def test_ack_clears_an_earlier_failure_but_never_a_failing_latest_run() -> None:
    """`drwatch ack` after a failure (here followed by an error run, so not proven fixed) clears it, naming
    who and why; a failure after the ack counts again; a latest run that failed is never cleared by an ack."""
    cfg = config()
    failed = run(outcome=Outcome.FAILED, at=NOW - 2 * DAY)
    errored = run(outcome=Outcome.ERROR, at=NOW - 10 * MINUTE, rp=None)
    ok = run(*all_verified(), at=NOW - 5 * MINUTE)  # folded last: the latest result
    ack = Ack("weights", "replica", "alice", "bad dump deleted, INC-42", NOW - DAY)
    snap = replace(snapshot(cfg, failed, errored, ok), acks={("weights", "replica"): ack})
    assert evaluate(cfg, snap, NOW)["weights"].rules["restore_errors"].state == PASS
    snap = replace(snapshot(cfg, failed, errored), acks={("weights", "replica"): ack})
    rule = evaluate(cfg, snap, NOW)["weights"].rules["restore_errors"]
    assert rule.state == UNKNOWN and "acknowledged by alice: bad dump deleted, INC-42" in rule.detail
    later = replace(ack, created_at=NOW - 3 * DAY)  # acked before the failure: does not cover it
    snap = replace(snapshot(cfg, failed, errored), acks={("weights", "replica"): later})
    assert evaluate(cfg, snap, NOW)["weights"].rules["restore_errors"].state == FAIL
    latest_failed = run(outcome=Outcome.FAILED, at=NOW - 10 * MINUTE)
    snap = replace(snapshot(cfg, latest_failed), acks={("weights", "replica"): replace(ack, created_at=NOW)})
    assert evaluate(cfg, snap, NOW)["weights"].rules["restore_errors"].state == FAIL


def test_errored_run_is_not_a_failure_in_the_window() -> None:
    """Runs that errored (could not check) do not count as failures for the window."""
    errored = run(outcome=Outcome.ERROR, at=NOW - DAY, rp=None)
    ok = run(*all_verified(), at=NOW - 10 * MINUTE)
    assert verdict(config(), errored, ok).rules["restore_errors"].state == PASS


def test_restore_errors_unknown_without_validators() -> None:
    """An asset without validators cannot show zero errors: unknown, saying so."""
    rule = verdict(config(validators=[])).rules["restore_errors"]
    assert (rule.state, rule.detail) == (UNKNOWN, "no validators configured")


def test_restore_errors_fail_wins_over_unknown_across_validators() -> None:
    """One validator failed, another never ran: fail (a failure is known); both named in the detail."""
    cfg = config(
        validators=[{"kind": "replica", "max_age": "6h"}, {"kind": "replica", "name": "deep", "max_age": "6h"}]
    )
    res = run(*all_verified(report("far", CopyState.FAILED)), outcome=Outcome.FAILED)
    rule = verdict(cfg, res).rules["restore_errors"]
    assert rule.state == FAIL
    assert rule.detail == "replica: latest run failed; deep: never ran"


def test_restore_errors_need_every_validator_ok() -> None:
    """One validator ok and another never ran: unknown, not pass."""
    cfg = config(
        validators=[{"kind": "replica", "max_age": "6h"}, {"kind": "replica", "name": "deep", "max_age": "6h"}]
    )
    rule = verdict(cfg, run(*all_verified())).rules["restore_errors"]
    assert (rule.state, rule.detail) == (UNKNOWN, "deep: never ran")
    both = verdict(cfg, run(*all_verified()), run(*all_verified(), validator="deep")).rules["restore_errors"]
    assert (both.state, both.detail) == (PASS, "2 validator(s) ok")
