"""How often `tokenrace compare` cries wolf, and how often it catches a real slowdown.

Pairs of synthetic runs (lognormal TTFT with median 200 ms and inter-token gaps with median 20 ms, 50-150
tokens, 5% failed requests, 150 requests per run) are compared:

- null pairs: both runs drawn from the same distribution; any flagged metric is a false alarm;
- slowdown pairs: run B's whole timeline is 20% slower; the TTFT p50 regression should be flagged.

Usage: .venv/bin/python benchmarks/compare_calibration.py [--pairs 100] [--requests 150] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tokenrace.compare import compare_records
from tokenrace.records import FAILED, OK, RequestRecord, RunInfo


def synthetic_run(run_id: str, n: int, seed: int, scale: float = 1.0) -> tuple[RunInfo, list[RequestRecord]]:
    rng = np.random.default_rng(seed)
    info = RunInfo(run_id, 0.0, "ep", "synthetic", {"kind": "concurrency", "concurrency": 4}, {}, {}, {}, "complete")
    records = []
    for seq in range(n):
        sent = seq * 0.5
        record = RequestRecord(run_id=run_id, seq=seq, endpoint="ep", api="openai-chat", model="m", sent_s=sent)
        record.scheduled_s = sent
        if rng.random() < 0.05:
            record.status, record.error_category, record.done_s = FAILED, "http_5xx", sent + 0.05
        else:
            tokens = int(rng.integers(50, 151))
            ttft = 0.2 * rng.lognormal(0.0, 0.3) * scale
            gaps = 0.02 * rng.lognormal(0.0, 0.3, size=tokens - 1) * scale
            times = sent + ttft + np.concatenate(([0.0], np.cumsum(gaps)))
            record.status = OK
            record.token_times_s = record.event_times_s = times.tolist()
            record.first_token_s = record.first_answer_s = float(times[0])
            record.last_token_s = float(times[-1])
            record.done_s = float(times[-1]) + 0.005 * scale
            record.usage_completion_tokens = record.client_output_tokens = tokens
            record.first_chunk_tokens = 1
        records.append(record)
    return info, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    started = time.perf_counter()
    alarms = {"holm": 0, "none": 0}
    caught = {"holm": 0, "none": 0}
    for pair in range(args.pairs):
        a = synthetic_run("a", args.requests, 1000 + pair)
        same = synthetic_run("b", args.requests, 2000 + pair)
        slow = synthetic_run("c", args.requests, 3000 + pair, scale=1.2)
        for correction in alarms:
            null = compare_records(*a, *same, resamples=args.resamples, seed=pair, correction=correction)
            alarms[correction] += any(m.flagged for m in null.metrics)
            real = compare_records(*a, *slow, resamples=args.resamples, seed=pair, correction=correction)
            caught[correction] += real.metric("ttft_p50_ms").direction == "worse"
    print(f"{args.pairs} pairs of {args.requests}-request runs, {args.resamples} resamples, 95% level")
    print()
    print("| correction | null pairs with any flag (false alarms) | 20% slowdown: TTFT p50 flagged worse |")
    print("|---|---:|---:|")
    for correction in ("holm", "none"):
        print(
            f"| {correction} | {alarms[correction]}/{args.pairs} ({alarms[correction] / args.pairs:.0%}) "
            f"| {caught[correction]}/{args.pairs} ({caught[correction] / args.pairs:.0%}) |"
        )
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
