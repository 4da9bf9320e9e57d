"""Engine ``vllm``: greedy decoding of golden prompts, compared token by token, tolerant at logprob level.

vLLM publishes CUDA wheels only; this module imports it inside ``load`` alone, so it costs nothing where
vLLM is absent (the worker then reports ``engine_missing``). The comparison is a pure function,
:func:`compare_greedy`, tested everywhere.

An output is ``{"text", "tokens": [id...], "top": [[[id, logprob], ...] per position]}`` (the top-k
alternatives at each generated position, best first). Greedy decoding of the same model on different
hardware or kernels may flip the choice between two near-equal tokens, after which the texts legitimately
differ; corrupt weights move probabilities far more. So two outputs agree when

- every position up to the first divergence picks the same token, and the logprob of that token differs
  by at most ``logprob_tolerance`` between golden and produced (the distribution did not drift), and
- the first divergence, if any, is a near-tie under both runs: each run's token is in the other's top-k,
  within ``logprob_tolerance`` of that run's best token (everything after it is not compared).

The score is 1.0 for agreement, else the share of the golden continuation reproduced before the
disagreement (``i / len(golden)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from drwatch.inference.score import Score

DEFAULT_PROMPTS = (
    "The capital of France is",
    "Backups are only useful if",
    "def fibonacci(n):",
    "Translate to German: good morning ->",
)
DEFAULT_TOLERANCE = 0.5


def _top(top: Sequence[Any], i: int) -> dict[int, float]:
    if i >= len(top) or not isinstance(top[i], list):
        return {}
    return {int(tid): float(lp) for tid, lp in top[i]}


def compare_greedy(golden: Mapping[str, Any], produced: Mapping[str, Any],
                   tolerance: float = DEFAULT_TOLERANCE) -> Score:
    """Score one greedy continuation against its golden (see the module docstring). Pure."""
    g_tokens = [int(t) for t in golden.get("tokens", [])]
    p_tokens = [int(t) for t in produced.get("tokens", [])]
    g_top, p_top = golden.get("top", []), produced.get("top", [])
    n = max(len(g_tokens), 1)
    for i in range(min(len(g_tokens), len(p_tokens))):
        gt, pt = g_tokens[i], p_tokens[i]
        g_alts, p_alts = _top(g_top, i), _top(p_top, i)
        if gt == pt:
            if gt in g_alts and pt in p_alts and abs(g_alts[gt] - p_alts[pt]) > tolerance:
                return Score(i / n, f"position {i}: logprob of token {gt} drifted from {g_alts[gt]:.3f} to "
                                    f"{p_alts[pt]:.3f} (tolerance {tolerance})")
            continue
        g_best = max(g_alts.values(), default=None)
        p_best = max(p_alts.values(), default=None)
        near_in_golden = g_best is not None and pt in g_alts and g_best - g_alts[pt] <= tolerance
        near_in_produced = p_best is not None and gt in p_alts and p_best - p_alts[gt] <= tolerance
        if near_in_golden and near_in_produced:
            return Score(1.0, f"diverges at position {i} on a near-tie (tokens {gt}/{pt}); the prefix matches")
        return Score(i / n, f"position {i}: token {pt} where the golden has {gt}, not a near-tie")
    if len(p_tokens) != len(g_tokens):
        shorter = min(len(p_tokens), len(g_tokens))
        return Score(shorter / n, f"{len(p_tokens)} tokens generated, the golden has {len(g_tokens)}")
    return Score(1.0)


class VllmEngine:
    name: ClassVar[str] = "vllm"
    package: ClassVar[str] = "vllm"
    default_inputs: ClassVar[tuple[str, ...]] = DEFAULT_PROMPTS

    def load(self, model_dir: str, options: Mapping[str, Any]) -> Any:
        from vllm import LLM

        args = dict(options.get("engine_args") or {})
        return LLM(model=model_dir, tokenizer=model_dir, seed=0, **args)

    def generate(self, model: Any, inputs: Sequence[str], options: Mapping[str, Any]) -> list[Any]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=int(options.get("max_tokens", 32)),
                                logprobs=int(options.get("top_logprobs", 5)))
        out: list[Any] = []
        for request in model.generate(list(inputs), params, use_tqdm=False):
            comp = request.outputs[0]
            top = []
            for position in comp.logprobs or []:
                ranked = sorted(((int(tid), float(lp.logprob)) for tid, lp in position.items()),
                                key=lambda item: -item[1])
                top.append([[tid, lp] for tid, lp in ranked])
            out.append({"text": comp.text, "tokens": [int(t) for t in comp.token_ids], "top": top})
        return out

    def versions(self) -> dict[str, str]:
        import vllm

        return {"vllm": str(vllm.__version__)}

    def compare(self, golden: Sequence[Any], produced: Sequence[Any], options: Mapping[str, Any]) -> list[Score]:
        if len(golden) != len(produced):
            return [Score(0.0, f"{len(produced)} outputs for {len(golden)} golden prompts")]
        tolerance = float(options.get("logprob_tolerance", DEFAULT_TOLERANCE))
        return [compare_greedy(g, p, tolerance) if isinstance(p, dict) else Score(0.0, "output is not a mapping")
                for g, p in zip(golden, produced, strict=True)]
