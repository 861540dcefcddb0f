"""Load profiles: exact constant arrivals, the right statistics for random ones, and CLI rules."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest

from tokenrace.profiles import (
    DEFAULT_REQUESTS,
    LoadProfile,
    arrival_offsets,
    parse_duration,
    profile_from_cli,
    sweep_rates,
)

N = 20_000


def take(profile: LoadProfile, n: int) -> np.ndarray:
    return np.array(list(islice(arrival_offsets(profile), n)))


def intervals(profile: LoadProfile, n: int = N) -> np.ndarray:
    return np.diff(take(profile, n + 1))


# --- arrivals ----------------------------------------------------------------------------------


def test_constant_offsets_exact() -> None:
    offsets = list(islice(arrival_offsets(LoadProfile("constant", rate=4.0)), 9))
    assert offsets == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    far = list(islice(arrival_offsets(LoadProfile("constant", rate=3.0)), 1_000_001))
    assert far[-1] == 1_000_000 / 3.0  # no accumulated drift


@pytest.mark.parametrize("rate", [0.5, 10.0, 250.0])
def test_poisson_mean_and_cv(rate: float) -> None:
    gaps = intervals(LoadProfile("poisson", rate=rate, seed=7))
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    cv = gaps.std() / gaps.mean()
    assert cv == pytest.approx(1.0, abs=0.04)
    assert (gaps >= 0).all()


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_mean_and_cv2(burstiness: float) -> None:
    rate = 20.0
    gaps = intervals(LoadProfile("gamma", rate=rate, burstiness=burstiness, seed=3))
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)
    cv2 = gaps.var() / gaps.mean() ** 2
    assert cv2 == pytest.approx(burstiness, rel=0.1)


def test_offsets_start_at_zero_and_never_decrease() -> None:
    for p in (
        LoadProfile("constant", rate=5),
        LoadProfile("poisson", rate=5),
        LoadProfile("gamma", rate=5, burstiness=8),
    ):
        t = take(p, 5000)
        assert t[0] == 0.0
        assert (np.diff(t) >= 0).all()


def test_seeded_reproducibility() -> None:
    for kind, extra in (("poisson", {}), ("gamma", {"burstiness": 2.5})):
        a = take(LoadProfile(kind, rate=3, seed=42, **extra), 3000)
        b = take(LoadProfile(kind, rate=3, seed=42, **extra), 3000)
        c = take(LoadProfile(kind, rate=3, seed=43, **extra), 3000)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_iterator_is_infinite_across_chunks() -> None:
    t = take(LoadProfile("poisson", rate=1000), 5000)  # several internal chunks
    assert len(t) == 5000 and (np.diff(t) >= 0).all()


@pytest.mark.parametrize("kind", ["synchronous", "concurrency"])
def test_closed_loop_kinds_have_no_offsets(kind: str) -> None:
    p = LoadProfile(kind, concurrency=4 if kind == "concurrency" else None)
    with pytest.raises(ValueError, match="no arrival times"):
        next(arrival_offsets(p))


# --- the dataclass -----------------------------------------------------------------------------


def test_describe_is_json_ready_and_round_trips() -> None:
    p = LoadProfile("gamma", rate=2.5, concurrency=8, burstiness=3.0, duration_s=60, warmup_requests=5)
    d = p.describe()
    assert json.loads(json.dumps(d)) == d
    assert d["kind"] == "gamma" and d["rate"] == 2.5 and d["burstiness"] == 3.0
    assert "gamma" in d["label"] and "max 8 in flight" in d["label"]
    assert LoadProfile.from_description(d) == p


def test_default_stop_is_requests() -> None:
    assert LoadProfile("synchronous").requests == DEFAULT_REQUESTS == 100
    assert LoadProfile("synchronous", duration_s=5).requests is None


def test_replace_normalises_ignored_fields() -> None:
    gamma = LoadProfile("gamma", rate=5, burstiness=3, concurrency=8)
    closed = replace(gamma, kind="concurrency", rate=None, concurrency=32)
    assert closed.burstiness == 1.0 and closed.describe()["burstiness"] == 1.0
    assert replace(closed, kind="gamma", rate=2, burstiness=2).burstiness == 2
    assert LoadProfile("synchronous", concurrency=4).concurrency is None


def test_max_in_flight() -> None:
    assert LoadProfile("synchronous").max_in_flight == 1
    assert LoadProfile("concurrency", concurrency=16).max_in_flight == 16
    assert LoadProfile("poisson", rate=1).max_in_flight is None
    assert LoadProfile("poisson", rate=1, concurrency=4).max_in_flight == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "burst"},
        {"kind": "constant"},
        {"kind": "poisson", "rate": 0},
        {"kind": "poisson", "rate": float("inf")},
        {"kind": "synchronous", "rate": 1},
        {"kind": "concurrency"},
        {"kind": "concurrency", "concurrency": 0},
        {"kind": "gamma", "rate": 1, "burstiness": 0},
        {"kind": "synchronous", "requests": 0},
        {"kind": "synchronous", "duration_s": -1},
        {"kind": "synchronous", "warmup_requests": -1},
    ],
)
def test_invalid_profiles(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LoadProfile(**kwargs)  # type: ignore[arg-type]


# --- CLI rules ---------------------------------------------------------------------------------


def cli(**kw: object) -> LoadProfile:
    args: dict[str, object] = {
        "concurrency": None,
        "rate": None,
        "arrival": None,
        "requests": None,
        "duration": None,
        "warmup": 0,
        "seed": 0,
    }
    args.update(kw)
    return profile_from_cli(**args)  # type: ignore[arg-type]


def test_cli_synchronous_by_default() -> None:
    p = cli()
    assert p.kind == "synchronous" and p.rate is None and p.concurrency is None
    assert p.requests == 100 and p.duration_s is None


def test_cli_concurrency_only() -> None:
    p = cli(concurrency=32, requests=500, warmup=10, seed=9)
    assert (p.kind, p.concurrency, p.requests, p.warmup_requests, p.seed) == ("concurrency", 32, 500, 10, 9)


def test_cli_rate_defaults_to_constant_with_cap() -> None:
    p = cli(rate=5.0, concurrency=64, duration="2m")
    assert (p.kind, p.rate, p.concurrency, p.duration_s, p.requests) == ("constant", 5.0, 64, 120.0, None)


def test_cli_arrivals() -> None:
    assert cli(rate=2, arrival="poisson").kind == "poisson"
    assert cli(rate=2, arrival="constant").kind == "constant"
    g = cli(rate=2, arrival="gamma:2.5")
    assert (g.kind, g.burstiness) == ("gamma", 2.5)
    assert cli(rate=2, arrival="Gamma:0.5").burstiness == 0.5


def test_cli_requests_and_duration_together() -> None:
    p = cli(requests=50, duration="30s")
    assert p.requests == 50 and p.duration_s == 30.0


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"rate": 0}, "--rate must be > 0"),
        ({"rate": -1.0}, "--rate must be > 0"),
        ({"rate": float("nan")}, "--rate must be > 0"),
        ({"concurrency": 0}, "--concurrency must be >= 1"),
        ({"requests": 0}, "--requests must be >= 1"),
        ({"duration": "0s"}, "--duration must be > 0"),
        ({"duration": "soon"}, "--duration"),
        ({"warmup": -1}, "--warmup must be >= 0"),
        ({"seed": -1}, "--seed must be >= 0"),
        ({"arrival": "poisson"}, "--arrival needs --rate"),
        ({"arrival": "gamma:2", "concurrency": 4}, "--arrival needs --rate"),
        ({"rate": 1, "arrival": "uniform"}, "--arrival must be constant, poisson or gamma:B"),
        ({"rate": 1, "arrival": "gamma"}, "--arrival gamma needs a burstiness"),
        ({"rate": 1, "arrival": "gamma:0"}, "B > 0"),
        ({"rate": 1, "arrival": "gamma:-2"}, "B > 0"),
        ({"rate": 1, "arrival": "gamma:x"}, "B > 0"),
    ],
)
def test_cli_errors_name_the_flag(kw: dict[str, object], flag: str) -> None:
    with pytest.raises(ValueError) as info:
        cli(**kw)
    assert flag in str(info.value)


# --- durations and sweeps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("2m", 120.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("30", 30.0),
        ("1.5", 1.5),
        ("1.5m", 90.0),
        (" 1m30s ", 90.0),
        ("1H", 3600.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "60x", "-5s", "1 m", "ten", "5s3", "inf", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_sweep_rates() -> None:
    rates = sweep_rates(100.0, 10)
    assert len(rates) == 10
    assert rates[0] == pytest.approx(10.0) and rates[-1] == 100.0
    assert np.allclose(np.diff(rates), 10.0)
    assert sweep_rates(7.3, 1) == [7.3]
    r = sweep_rates(50, 5, low_fraction=0.2)
    assert r == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0])
    assert r == sorted(r)


@pytest.mark.parametrize("args", [(0.0, 5), (-1.0, 5), (10.0, 0), (float("inf"), 3), (10.0, 3, 0.0), (10.0, 3, 1.5)])
def test_sweep_rates_rejects(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        sweep_rates(*args)  # type: ignore[arg-type]
