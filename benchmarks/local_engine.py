"""Local engine: start time, single-stream and 4-stream speed, and client vs server speed agreement.

    .venv/bin/python benchmarks/local_engine.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--requests 8]

For each model: the engine is started (spawn → /health 200 is timed), then tokenrace benchmarks it with
128-token responses (ignore_eos, so every response has the same length) at 1 and at 4 concurrent
streams on 4 slots. "client vs server" is the median gap between the client's output speed and
llama.cpp's own decode speed for the same requests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

from tokenrace.bench import run_bench
from tokenrace.config import EndpointConfig
from tokenrace.engines.models import ensure_model
from tokenrace.engines.server import Engine, EngineSettings
from tokenrace.profiles import LoadProfile
from tokenrace.store import Store
from tokenrace.workloads import parse_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    table = Table(title="local engine (llama.cpp via xllamacpp), 128 output tokens per request", title_justify="left")
    for column in (
        "model",
        "start s",
        "streams",
        "speed p50 tok/s",
        "TTFT p50 ms",
        "throughput tok/s",
        "server decode p50",
        "client vs server",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    workload = parse_workload("synthetic:input=64,output=128,ignore_eos=1")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(str(Path(tmp) / "bench.db"))
        for model in args.models.split(","):
            path = ensure_model(model)
            started = time.perf_counter()
            with Engine(EngineSettings(model_path=path, parallel=4, context=8192, alias=model)) as engine:
                engine.start()
                start_s = time.perf_counter() - started
                endpoint = EndpointConfig(name=model, engine="local", model=model).with_base_url(engine.base_url)
                for streams in (1, 4):
                    profile = LoadProfile(
                        kind="concurrency", concurrency=streams, requests=args.requests, warmup_requests=streams
                    )
                    summary = uvloop.run(run_bench(endpoint, workload, profile, store)).summary
                    server = summary.get("server") or {}
                    gap = server.get("client_vs_server_speed_pct")
                    table.add_row(
                        model,
                        f"{start_s:.2f}" if streams == 1 else "",
                        str(streams),
                        f"{summary['metrics']['output_speed_tps']['p50']:.1f}",
                        f"{summary['metrics']['ttft_ms']['p50']:.1f}",
                        f"{summary['throughput']['output_tokens_per_s']:.1f}",
                        f"{(server.get('decode_tps') or {}).get('p50', 0):.1f}",
                        f"{gap:+.2f}%" if gap is not None else "–",
                    )
        store.close()
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
