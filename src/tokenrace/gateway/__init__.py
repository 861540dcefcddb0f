"""The routing gateway (``tokenrace serve``): an OpenAI-compatible endpoint that picks an upstream per call.

Flow of one call::

    client ─► app (ASGI: parse, auth, limits) ─► router.plan (route, policy, difficulty, breaker, live stats)
           ◄─ stream passed through chunk by chunk ◄─ proxy (upstream call, fallback, translation) ◄─ upstream
                                     └─► telemetry: the same RequestRecord benchmarks write, batched to the store

Modules: ``app`` (ASGI routes and the request life cycle), ``proxy`` (upstream calls, retries, fallback,
pass-through), ``translate`` (OpenAI ⇄ Anthropic bodies and streams), ``policies`` (candidate order per route),
``livestats`` (EWMA TTFT / speed / errors / in-flight per endpoint), ``breaker`` (circuit breaker),
``difficulty`` (prompt difficulty estimators and the premium-share calibration), ``access`` (keys, rate
limits, budgets), ``telemetry`` (records and Prometheus metrics).
"""
