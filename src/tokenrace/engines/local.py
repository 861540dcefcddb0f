"""A local endpoint's lifecycle: model file → running llama.cpp engine → an ordinary openai-chat endpoint.

The rest of tokenrace never knows an endpoint is local: ``running_endpoint`` yields the same
``EndpointConfig`` with the engine's URL filled in, and stops the engine when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from tokenrace.config import EndpointConfig


@contextlib.contextmanager
def running_endpoint(
    endpoint: EndpointConfig, *, log: Callable[[str], None] | None = None
) -> Iterator[tuple[EndpointConfig, dict[str, Any]]]:
    """Start the engine of an ``engine: local`` endpoint (other endpoints pass through untouched).

    Yields the endpoint to benchmark and a description of the engine to store with the run.
    """
    if not endpoint.is_local:
        yield endpoint, {}
        return
    from tokenrace.engines.models import ensure_model
    from tokenrace.engines.server import Engine, EngineSettings

    path = ensure_model(endpoint.model, log=log)
    options = endpoint.local
    settings = EngineSettings(
        model_path=path,
        port=options.port,
        parallel=options.parallel,
        context=options.context,
        threads=options.threads,
        alias=endpoint.model,
    )
    engine = Engine(settings)
    try:
        engine.start()
        if log:
            log(f"engine for {endpoint.model} on {engine.base_url} (log: {engine.log_path})")
        info = {
            "kind": "llama.cpp",
            "xllamacpp": _version("xllamacpp"),
            "model": endpoint.model,
            "model_path": str(path),
            "parallel": options.parallel,
            "context": options.context,
            "threads": engine.threads,
            "log": str(engine.log_path),
            "price_per_hour": endpoint.price_per_hour,
        }
        yield endpoint.with_base_url(engine.base_url), info
    finally:
        engine.stop()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
