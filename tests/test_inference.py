"""Inference pieces that need no model: the engines' pure comparisons, the goldens file, the worker's
failure classes and how the validator judges a worker result (the backup's fault or not)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import Finding, Severity
from drwatch.inference import engines, goldens
from drwatch.inference.engine_sbert import compare_embeddings, cosine
from drwatch.inference.engine_vllm import compare_greedy
from drwatch.inference.launch import WorkerResult
from drwatch.inference.worker import _failure
from drwatch.validators.model.inference.drill import InferenceConfig
from drwatch.validators.model.inference.drill import judge as judge_result


def out(tokens: list[int], top: list[list[tuple[int, float]]] | None = None) -> dict[str, Any]:
    return {"text": "", "tokens": tokens, "top": [[list(p) for p in pos] for pos in (top or [])]}


# --- vllm: greedy decoding compared at the logprob level -------------------------------------------------

def test_identical_greedy_outputs_agree() -> None:
    top = [[(5, -0.1), (7, -2.5)], [(9, -0.3), (2, -1.9)]]
    assert compare_greedy(out([5, 9], top), out([5, 9], top)).similarity == 1.0


def test_near_tie_divergence_is_tolerated() -> None:
    """Position 1 is almost a tie (-0.70 vs -0.72) in both runs: a different kernel may pick either; what
    follows the divergence is not compared."""
    golden = out([5, 9, 1, 1], [[(5, -0.1)], [(9, -0.70), (4, -0.72)], [(1, -0.1)], [(1, -0.1)]])
    produced = out([5, 4, 8, 8], [[(5, -0.12)], [(4, -0.69), (9, -0.71)], [(8, -0.2)], [(8, -0.2)]])
    score = compare_greedy(golden, produced, tolerance=0.5)
    assert score.similarity == 1.0
    assert "near-tie" in score.detail


def test_confident_divergence_fails_with_the_share_reproduced() -> None:
    """The golden picked token 9 with a margin of 3 nats; picking 4 instead is not noise: 1 of 4 reproduced."""
    golden = out([5, 9, 1, 1], [[(5, -0.1)], [(9, -0.05), (4, -3.05)], [(1, -0.1)], [(1, -0.1)]])
    produced = out([5, 4, 1, 1], [[(5, -0.1)], [(4, -0.2), (9, -1.9)], [(1, -0.1)], [(1, -0.1)]])
    score = compare_greedy(golden, produced, tolerance=0.5)
    assert score.similarity == 0.25
    assert "position 1" in score.detail


def test_divergent_token_outside_the_top_k_fails() -> None:
    golden = out([5, 9], [[(5, -0.1)], [(9, -0.6), (4, -0.7)]])
    produced = out([5, 3], [[(5, -0.1)], [(3, -0.1), (8, -0.2)]])  # golden's 9 is not even in its top-k
    assert compare_greedy(golden, produced).similarity == 0.5


def test_same_tokens_with_drifted_logprobs_fail() -> None:
    """Corrupt weights can keep the argmax yet move the distribution: the chosen token's logprob drifted."""
    golden = out([5, 9], [[(5, -0.1)], [(9, -0.2)]])
    produced = out([5, 9], [[(5, -0.1)], [(9, -1.6)]])
    score = compare_greedy(golden, produced, tolerance=0.5)
    assert score.similarity == 0.5
    assert "drifted" in score.detail


def test_early_stop_and_count_mismatch() -> None:
    golden = out([5, 9, 1, 2])
    assert compare_greedy(golden, out([5, 9])).similarity == 0.5
    vllm = engines()["vllm"]
    assert vllm.compare([golden], [], {})[0].similarity == 0.0


@pytest.mark.skipif(not __import__("importlib").util.find_spec("vllm"), reason="vLLM ships CUDA-only wheels")
def test_vllm_engine_generates_greedy_outputs(tmp_path: Path) -> None:
    """Only where vLLM is importable (a CUDA host): a tiny model decodes deterministically, twice alike."""
    from drwatch.inference.worker import serve

    model = Path(__import__("os").environ.get("DRWATCH_VLLM_TEST_MODEL", "facebook/opt-125m"))
    request = {"engine": "vllm", "model_dir": str(model), "inputs": ["The capital of France is"],
               "options": {"max_tokens": 8, "top_logprobs": 5, "engine_args": {"enforce_eager": True}}}
    first, second = serve(request), serve(request)
    assert first["ok"] and second["ok"], (first, second)
    assert engines()["vllm"].compare(first["outputs"], second["outputs"], {})[0].similarity == 1.0


# --- sentence_transformers: cosine -----------------------------------------------------------------------

def test_cosine_edge_cases() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(-1.0)
    assert cosine([1.0, 0.0], [math.nan, 0.0]) == -1.0  # NaN never passes a threshold
    assert cosine([1.0, 0.0], [math.inf, 0.0]) == -1.0
    assert cosine([1.0], [1.0, 0.0]) == -1.0
    assert cosine([0.0, 0.0], [1.0, 0.0]) == -1.0


def test_embedding_comparison_reports_the_reason() -> None:
    scores = compare_embeddings([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.1], [math.nan, 1.0]])
    assert scores[0].similarity > 0.99
    assert scores[1].similarity == -1.0 and "non-finite" in scores[1].detail
    assert compare_embeddings([[1.0]], [])[0].similarity == -1.0


# --- goldens file ----------------------------------------------------------------------------------------

def test_goldens_round_trip_and_errors(tmp_path: Path) -> None:
    gold = goldens.Goldens("sentence_transformers", "sha256:" + "0" * 64, ("a", "b"), ([1.0], [2.0]), 1.0,
                           "weights/dr", {"torch": "2"}, {})
    path = tmp_path / "g" / "goldens.json"
    goldens.save(path, gold)
    assert goldens.load(path) == gold
    assert [p.name for p in path.parent.iterdir()] == ["goldens.json"]  # no temporary file left
    with pytest.raises(goldens.GoldensError, match="does not exist"):
        goldens.load(tmp_path / "none.json")
    for text, why in (("{", "not JSON"), ('{"drwatch_goldens": 2}', "version 1"),
                      (json.dumps({**gold.to_dict(), "outputs": [[1.0]]}), "one output per input"),
                      (json.dumps({**gold.to_dict(), "inputs": []}), "non-empty"),
                      (json.dumps({k: v for k, v in gold.to_dict().items() if k != "seal_digest"}), "seal_digest")):
        with pytest.raises(goldens.GoldensError, match=why):
            goldens.parse(text)


# --- the worker's failure classes ------------------------------------------------------------------------

def test_worker_failure_classes() -> None:
    """A missing package is `engine_missing`, running out of address space `memory` (even when it surfaces
    as an ImportError of a library that cannot be mapped), anything else a load/run failure."""
    assert _failure(ModuleNotFoundError("No module named 'sentence_transformers'"), "load")["code"] == \
        "engine_missing"
    assert _failure(ImportError("libtorch_cpu.so: failed to map segment from shared object"), "load")["code"] == \
        "memory"
    assert _failure(MemoryError(), "run")["code"] == "memory"
    assert _failure(RuntimeError("DefaultCPUAllocator: can't allocate memory"), "run")["code"] == "memory"
    assert _failure(ValueError("header too large"), "load")["code"] == "load_failed"
    assert _failure(KeyError("x"), "run")["code"] == "run_failed"


# --- judging a worker result: the backup's fault, or not -------------------------------------------------

GOLD = goldens.Goldens("sentence_transformers", "sha256:x", ("a",), ([1.0, 0.0],), 0.0, versions={"torch": "1"})
INF = InferenceConfig.model_validate({"engine": "sentence_transformers", "goldens": "g.json"})


def judge(result: WorkerResult, blame_backup: bool, stale: bool = False) -> tuple[bool, bool, list[Finding]]:
    findings: list[Finding] = []
    figures: dict[str, float] = {}
    failed, error = judge_result(INF, GOLD, result, blame_backup, stale, figures, findings, "dr")
    return failed, error, findings


@pytest.mark.parametrize(("result", "blame", "expected", "code"), [
    (WorkerResult(True, outputs=[[1.0, 0.001]]), True, (False, False), None),
    (WorkerResult(True, outputs=[[0.0, 1.0]]), True, (True, False), "golden_mismatch"),
    (WorkerResult(True, outputs=[[0.0, 1.0]]), False, (False, True), "golden_drift"),
    (WorkerResult(False, "load_failed", "bad header"), True, (True, False), "inference_failed"),
    (WorkerResult(False, "crashed", "signal 11"), True, (True, False), "inference_failed"),
    (WorkerResult(False, "load_failed", "bad header"), False, (False, True), "inference_error"),
    (WorkerResult(False, "engine_missing", "no torch"), True, (False, True), "inference_engine_missing"),
    (WorkerResult(False, "memory", "ENOMEM"), True, (False, True), "inference_memory"),
    (WorkerResult(False, "timeout", "killed"), True, (False, True), "inference_timeout"),
])
def test_judging_worker_results(result: WorkerResult, blame: bool, expected: tuple[bool, bool],
                                code: str | None) -> None:
    """Failed only when the restored bytes differ from the seal (``blame``) and the model does not load or
    reproduce the goldens; the same symptoms with bytes equal to the seal are errors (the serving stack
    changed); engine, memory and time problems are always errors."""
    failed, error, findings = judge(result, blame)
    assert (failed, error) == expected
    assert [f.code for f in findings] == ([code] if code else [])
    if failed:
        assert findings[0].severity == Severity.CRITICAL


def test_stale_goldens_explain_a_drift() -> None:
    _, error, findings = judge(WorkerResult(True, outputs=[[0.0, 1.0]]), False, stale=True)
    assert error and "another seal" in findings[0].message
