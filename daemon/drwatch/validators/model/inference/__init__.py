"""The ``model_weights`` validator's inference smoke test: restoring a copy and judging what the model produces
(:mod:`.drill`), and recording the goldens (:mod:`.record`, ``drwatch golden record``). The engines and the
worker process they run in are :mod:`drwatch.inference` (standard library only, so that the worker starts in
any interpreter and reports a missing engine package cleanly)."""
