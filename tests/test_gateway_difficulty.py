"""Heuristic difficulty scores and the premium-share calibration."""

from __future__ import annotations

import random

import pytest

from tokenrace.gateway.difficulty import DifficultyEstimator, HeuristicDifficulty, PremiumShareCalibrator, message_text

HARD = """I need you to design and implement a rate limiter in Python. First explain the trade-offs between a token
bucket and a sliding window, then write the code step by step.

Requirements:
1. It must be thread-safe and handle at least 10,000 requests per second.
2. It should expose `def allow(self, key: str) -> bool` and never block.
3. Include pytest unit tests and analyze the time and memory complexity.

Then prove that the sliding window never admits more than N requests in any interval of length T, and derive
the memory bound as an equation in N and T.

```python
class RateLimiter:
    def __init__(self, rate: int, per: float) -> None:
        self.rate = rate; self.per = per
```
"""

EASY = ["hi", "Hello!", "What is the capital of France?", "Translate 'good night' into Spanish.", "thanks!"]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_heuristic_satisfies_the_protocol() -> None:
    estimator: DifficultyEstimator = HeuristicDifficulty()
    assert estimator.name == "heuristic"


@pytest.mark.parametrize("text", EASY)
def test_easy_prompts_score_low(text: str) -> None:
    assert HeuristicDifficulty().score(user(text)) < 0.1


def test_long_multistep_coding_math_prompt_scores_high() -> None:
    h = HeuristicDifficulty()
    f = h.features(user(HARD))
    assert f["code"] > 0.5 and f["math"] > 0.3 and f["reasoning"] > 0.5 and f["constraints"] > 0.3
    assert f["easy"] == 0.0
    assert h.score(user(HARD)) > 0.9


def test_scores_order_by_difficulty() -> None:
    h = HeuristicDifficulty()
    hi = h.score(user("hi"))
    one_liner = h.score(user("Write a Python function that checks whether a string is a palindrome."))
    hard = h.score(user(HARD))
    assert hi < one_liner < hard


def test_every_feature_and_the_score_stay_in_range() -> None:
    h = HeuristicDifficulty()
    rng = random.Random(1)
    alphabet = "abc xyz{};$\\=+1234567890\n```step by step must prove def SELECT"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
        f = h.features(user(text))
        assert all(0.0 <= v <= 1.0 for v in f.values()), f
        assert 0.0 < h.score(user(text)) < 1.0


def test_reads_the_last_user_message_and_counts_the_whole_conversation() -> None:
    h = HeuristicDifficulty()
    convo = [
        {"role": "system", "content": "x" * 20_000},
        {"role": "user", "content": HARD},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "hi"},
    ]
    f = h.features(convo)
    assert f["easy"] > 0.9 and f["code"] == 0.0  # the last user message is "hi"
    assert f["conversation"] > 0.8  # but the context is long
    assert h.score(convo) > h.score(user("hi"))


def test_content_parts_and_odd_messages() -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}]}
    assert message_text(parts) == "hello"
    assert message_text({"role": "user", "content": None}) == ""
    assert message_text({"role": "user", "content": [{"type": "tool_result", "content": "42"}]}) == "42"
    h = HeuristicDifficulty()
    assert 0.0 < h.score([]) < 1.0
    assert 0.0 < h.score([{"role": "assistant", "content": "ok"}]) < 1.0


def test_very_long_prompt_is_scored() -> None:
    h = HeuristicDifficulty()
    assert h.features(user("word " * 50_000))["length"] == 1.0
    assert h.score(user(HARD * 100)) > 0.9


# --------------------------------------------------------------------------------------------------
# Calibrator


def decide(cal: PremiumShareCalibrator, scores: list[float]) -> float:
    """Share of scores sent to premium, deciding each on the past only (threshold, then observe)."""
    premium = 0
    for s in scores:
        premium += s >= cal.threshold()
        cal.observe(s)
    return premium / len(scores)


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5, 0.8])
def test_calibrator_reaches_the_target_share(share: float) -> None:
    rng = random.Random(42)
    scores = [rng.betavariate(2, 5) for _ in range(2000)]  # skewed, like real traffic (mostly easy)
    got = decide(PremiumShareCalibrator(share), scores)
    assert abs(got - share) <= 0.05, got


def test_calibrator_warmup_and_extremes() -> None:
    cal = PremiumShareCalibrator(0.3, warmup_threshold=0.42)
    for i in range(19):
        assert cal.threshold() == 0.42
        cal.observe(i / 19)
    cal.observe(1.0)
    assert cal.threshold() != 0.42
    never = PremiumShareCalibrator(0.0)
    always = PremiumShareCalibrator(1.0)
    for s in (0.0, 0.5, 1.0):
        never.observe(s)
        always.observe(s)
    assert never.threshold() > 1.0
    assert always.threshold() == 0.0


def test_calibrator_quantile_over_the_window() -> None:
    cal = PremiumShareCalibrator(0.25, window=100)
    for i in range(100):
        cal.observe(i / 100)
    assert cal.threshold() == pytest.approx(0.75)  # 25 of the 100 scores are >= 0.75
    for _ in range(100):  # the window forgets the old scores
        cal.observe(0.9)
    assert cal.threshold() == pytest.approx(0.9)
    cal.observe(float("nan"))  # ignored
    assert cal.threshold() == pytest.approx(0.9)


def test_calibrator_rejects_bad_share() -> None:
    with pytest.raises(ValueError):
        PremiumShareCalibrator(1.5)


def test_tie_fraction_splits_a_block_of_equal_scores() -> None:
    cal = PremiumShareCalibrator(0.5, window=100)
    for i in range(100):
        cal.observe(0.2 if i < 60 else 0.5 + i / 1000)  # 60 equal scores, 40 above
    assert cal.threshold() == 0.2
    assert cal.tie_fraction() == pytest.approx((50 - 40) / 60)
    assert PremiumShareCalibrator(0.5).tie_fraction() == 1.0  # warming up: plain >=
