"""What the report reads from a stored result without building it (reporting.timeline.Row: the verdict's signature,
the moments, objects and bytes proven, whether it is a drill), checked against the decoded Result on random
results; and the JSON report's serialisation (canonical document, integrity member last) checked for its digest."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from drwatch.core.model import CopyReport, CopyState, Outcome, Result
from drwatch.reporting import integrity
from drwatch.reporting.timeline import Row
from drwatch.store.base import result_params


def _copy(rng: random.Random, name: str, t: float) -> CopyReport:
    return CopyReport(
        name, rng.choice(["nas", "s3"]), rng.choice(["production", "copy"]), rng.choice(list(CopyState)),
        recovery_point=rng.choice([None, t - rng.uniform(0, 1e6)]), media=rng.choice(["hdd", "tape", "object"]),
        site=rng.choice(["", "dc-a", 'dc "b"\\']), immutable=rng.choice([None, True, False]),
        offline=rng.random() < 0.3, objects=rng.choice([{}, {"verified": rng.randrange(10**6)},
                                                        {"verified": rng.randrange(9), "missing": 3}]),
        bytes_verified=rng.choice([0, rng.randrange(2**62)]), region_observed=rng.random() < 0.5,
        lock=rng.choice([{}, {"compliance": 4}]), retain_until_min=rng.choice([None, t + rng.uniform(0, 1e7)]),
        dependencies=rng.choice([(), ("shared_credentials",), ("kms_in_production_region", "x")]))


def _row(result: Result, rid: int = 1) -> Row:
    return Row((rid, *result_params(result), "cfghash", "ab" * 32))


def _signature(res: Result) -> tuple[Any, ...]:
    return (res.outcome.value, tuple(
        (c.copy, c.state.value, c.media, c.site, c.region, c.provider, c.immutable, c.offline, c.region_observed,
         tuple(c.dependencies)) for c in res.copies))


def test_row_reads_what_the_decoded_result_holds() -> None:
    rng = random.Random(18)
    for i in range(400):
        t = 1.8e9 + i * 3600
        figures = rng.choice([{}, {"objects": 3.0}, {"restore_seconds": 12.5}, {"rows_restored": 10.0},
                              {"restore_seconds_total": 1.0}])
        res = Result(f"run-{i}", "a", rng.choice(["replica", "drill"]), "replica", rng.choice(list(Outcome)),
                     t - 30, t, figures=figures, copies=tuple(_copy(rng, f"c{k}", t) for k in range(rng.randrange(4))))
        row = _row(res, i + 1)
        assert row.signature() == _signature(res)
        assert row.objects == sum(int(c.objects.get("verified", 0)) for c in res.copies)
        assert row.nbytes == sum(c.bytes_verified for c in res.copies)
        assert row.recovery_points == [c.recovery_point for c in res.copies if c.recovery_point is not None]
        assert row.retain_until == [c.retain_until_min for c in res.copies if c.retain_until_min is not None]
        assert row.drill == ("restore_seconds" in figures or "rows_restored" in figures)
        assert row.figures == figures
        assert row.result == res
        # the next result of the validator with the same stored copies reuses them: it reads the same
        again = Result(f"run-{i}b", "a", res.validator, "replica", rng.choice(list(Outcome)), t, t + 60,
                       copies=res.copies)
        fresh, reused = _row(again, i + 1000), Row((i + 1000, *result_params(again), "h", "cd" * 32), row)
        for name in ("objects", "nbytes", "recovery_points", "retain_until", "drill"):
            assert getattr(reused, name) == getattr(fresh, name)
        assert reused.signature() == fresh.signature() == _signature(again)


def test_signature_ignores_times_and_counts_only() -> None:
    t = 1.8e9
    base = CopyReport("nas", "nas", "copy", CopyState.VERIFIED, t - 60, "hdd", site="dc-b",
                      objects={"verified": 5}, bytes_verified=50)

    def result(*copies: CopyReport, outcome: Outcome = Outcome.OK) -> Row:
        return _row(Result("r", "a", "replica", "replica", outcome, t - 5, t, copies=copies))

    same = CopyReport("nas", "nas", "copy", CopyState.VERIFIED, t - 7, "hdd", site="dc-b",
                      objects={"verified": 9}, bytes_verified=90, retain_until_min=t + 5)
    assert result(base).signature() == result(same).signature()
    for changed in (CopyReport("nas", "nas", "copy", CopyState.FAILED, t - 60, "hdd", site="dc-b"),
                    CopyReport("nas", "nas", "copy", CopyState.VERIFIED, t - 60, "hdd", site="dc-c"),
                    CopyReport("nas", "nas", "copy", CopyState.VERIFIED, t - 60, "hdd", site="dc-b", immutable=True),
                    CopyReport("nas", "nas", "copy", CopyState.VERIFIED, t - 60, "hdd", site="dc-b",
                               dependencies=("shared_credentials",))):
        assert result(base).signature() != result(changed).signature()
    assert result(base).signature() != result(base, outcome=Outcome.FAILED).signature()


def test_json_report_is_the_canonical_document_with_its_integrity() -> None:
    doc = {"format": "drwatch-report", "version": 1, "assets": {"é": {"n": [1, 2.5, None]}}, "z": "<x>"}
    data = integrity.seal_json(doc, None)
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    back = json.loads(data)
    assert list(back)[-1] == "integrity"
    assert {k: v for k, v in back.items() if k != "integrity"} == doc
    assert back["integrity"]["digest"] == hashlib.sha256(integrity.canonical(doc)).hexdigest()
    evidence, problems, _ = integrity.open_report(data, None)
    assert evidence is None
    assert problems == ["the report carries no evidence block (chain head and result digests)"]
    edited = data.replace(b'"<x>"', b'"<y>"')
    assert any("edited" in p for p in integrity.open_report(edited, None)[1])
    assert json.loads(integrity.seal_json({}, None)) == {"integrity": json.loads(data)["integrity"] | {
        "digest": hashlib.sha256(b"{}").hexdigest()}}
