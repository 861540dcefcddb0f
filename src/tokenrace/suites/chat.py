"""The chat suite: everyday assistant prompts, for speed under a realistic mix of short requests.

There is no right answer to a haiku, so ``score`` returns ``None`` and the registry marks the suite
``scored=False``; reports then show its speed without a quality column rather than a made-up score.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from tokenrace.records import RequestRecord
from tokenrace.suites import check_options, endless, make_request, resolve_nonce, seeded_subset, unique_tag
from tokenrace.suites.base import Score
from tokenrace.workloads import CHAT_PROMPTS, WorkloadRequest


class ChatSuite:
    name = "chat"
    scored = False

    def __init__(self, *, sample: int | None = None, max_tokens: int = 256, nonce: str | None = None) -> None:
        check_options(sample, max_tokens)
        self.sample = sample
        self.max_tokens = max_tokens
        self.nonce = nonce
        count = min(sample or len(CHAT_PROMPTS), len(CHAT_PROMPTS))
        self.description = f"chat: {count} everyday assistant prompts (speed only, not scored)"

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """A seeded subset (``sample``) of the built-in prompts, reshuffled each pass."""
        rng = random.Random(seed)
        indices = seeded_subset(range(len(CHAT_PROMPTS)), self.sample, rng)
        nonce = resolve_nonce(self.nonce)
        for number, index in enumerate(endless(indices, rng)):
            yield make_request(
                f"chat-{index}",
                unique_tag(nonce, number) + CHAT_PROMPTS[index],
                suite=self.name,
                reference=None,
                max_tokens=self.max_tokens,
            )

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score | None:
        """Nothing to grade: ``None`` means "unscored", never a 0."""
        return None
