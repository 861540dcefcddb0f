"""Prompt difficulty for the ``cascade`` policy: a score in [0, 1] and the threshold that splits the tiers.

A cascade sends easy prompts to a cheap tier and hard ones to a premium tier. The estimator must run on
every call before anything is sent, so it has to be cheap (well under a millisecond) and needs no model:
:class:`HeuristicDifficulty` scores surface features. Raw scores are not probabilities and a user rarely
knows which score means "hard", so :class:`PremiumShareCalibrator` turns "send about 30 % of calls to
premium" into a threshold: the 70th percentile of recent scores.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections import deque
from typing import Any, Protocol

__all__ = [
    "DifficultyEstimator",
    "HeuristicDifficulty",
    "PremiumShareCalibrator",
    "last_user_text",
    "message_text",
    "prompt_fingerprint",
]


class DifficultyEstimator(Protocol):
    """Anything that scores a chat: ``score`` in [0, 1], higher = harder, under 1 ms for 10k characters."""

    name: str

    def score(self, messages: list[dict[str, Any]]) -> float: ...


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message: a string content, or the text parts of an OpenAI/Anthropic part list."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
            else:
                inner = part.get("content")  # Anthropic tool_result
                if isinstance(inner, str):
                    texts.append(inner)
    return "\n".join(texts)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (the last message of any role when no user spoke)."""
    messages = [m for m in messages if isinstance(m, dict)]
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return message_text(messages[-1]) if messages else ""


def prompt_fingerprint(text: str) -> str:
    """The key two calls with the same prompt share: the first 16 hex digits of the text's SHA-256.

    The gateway stores it with every call (``extra["prompt_sha256"]``, of :func:`last_user_text`), so
    feedback on answers of different endpoints to one prompt pairs into an outcome table
    (``routing.outcomes.from_gateway_feedback``) without the gateway keeping the prompt itself.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


# Longer messages are scanned in two pieces (head and tail) so that a 100k-character paste costs the same
# as a 10k one; the instruction is nearly always at one end. Length itself is measured on the whole text.
_SCAN_HEAD = 6000
_SCAN_TAIL = 2000

_FENCE = "```"
_WORD_RE = re.compile(r"[a-z]+")
# Word -> feature it counts for (one dictionary lookup per word keeps a 10k-character prompt well under 1 ms;
# one regex alternation per feature took several).
_CODE = "code"
_MATH = "math"
_REASONING = "reasoning"
_CONSTRAINTS = "constraints"
_WORDS: dict[str, str] = {
    **dict.fromkeys(
        "def class function return import lambda const let var async await struct impl fn void public static "
        "include code python javascript typescript java rust golang sql regex compile compiler compiled bug "
        "traceback exception refactor implement implementation unit test tests api algorithm recursion "
        "complexity".split(),
        _CODE,
    ),
    **dict.fromkeys(
        "prove proof derive derivation derivative integral integrate equation theorem lemma matrix eigenvalue "
        "eigenvalues eigenvector probability variance limit converge converges convergence polynomial "
        "inequality modulo prime factorize factorise solve calculate compute".split(),
        _MATH,
    ),
    **dict.fromkeys(
        "compare comparing comparison design optimize optimise optimizing optimising optimization optimisation "
        "tradeoff tradeoffs analyze analyse analysis architecture evaluate debug debugging plan justify".split(),
        _REASONING,
    ),
    **dict.fromkeys("must should exactly ensure only require required without never always".split(), _CONSTRAINTS),
}
# Phrases (counted with str.count on the lower-cased text) and their feature.
_PHRASES: tuple[tuple[str, str], ...] = (
    ("c++", _CODE),
    ("stack trace", _CODE),
    ("big-o", _CODE),
    ("expected value", _MATH),
    ("step by step", _REASONING),
    ("step-by-step", _REASONING),
    ("explain why", _REASONING),
    ("why does", _REASONING),
    ("why do ", _REASONING),
    ("why is", _REASONING),
    ("why are", _REASONING),
    ("trade-off", _REASONING),
    ("pros and cons", _REASONING),
    ("edge case", _REASONING),
    ("at least", _CONSTRAINTS),
    ("at most", _CONSTRAINTS),
    ("no more than", _CONSTRAINTS),
    ("no less than", _CONSTRAINTS),
    ("do not", _CONSTRAINTS),
    ("don't", _CONSTRAINTS),
)
# Case-sensitive code tokens (SQL keywords are code only in upper case; "select" is also English).
_CODE_SYMBOLS = ("SELECT ", " FROM ", " WHERE ", " JOIN ", "GROUP BY", "#include", "=>", "->", "()")
_LATEX_RE = re.compile(
    r"\\(?:frac|int|sum|prod|sqrt|lim|infty|partial|alpha|beta|theta|cdot|leq|geq)\b|\$[^$\n]{1,200}\$"
)
_OPERATORS = "+-*/=^<>%"
_DIGITS = "0123456789"
_NUMBERED_RE = re.compile(r"(?m)^[ \t]*(?:\d{1,2}[.)]|[-*•])[ \t]+\S")
_EASY_RE = re.compile(
    r"^\W*(?:hi|hello|hey|thanks|thank you|good (?:morning|afternoon|evening)|what is|what's|what are|"
    r"who is|who was|who are|when (?:is|was|did)|where is|define|definition of|translate|summari[sz]e|"
    r"tl;?dr|how do you say|spell|tell me a joke)\b"
)


class HeuristicDifficulty:
    """Difficulty from surface features, combined by a logistic: ``score = 1 / (1 + e^(−z))``.

    Features read the LAST user message (the last message when no user message exists; head 6000 + tail
    2000 characters of a longer one), except ``conversation``. Word lists match whole lower-cased words,
    phrases match substrings; each feature lies in [0, 1] (``clamp`` cuts to [0, 1]), n = characters::

        length        clamp((log10(1 + n) − 1.5) / 2.5)          ~30 chars: 0, 300: 0.6, 1k: 0.8, 10k: 1
        conversation  clamp((log10(1 + N) − 2.5) / 2.0)          N = characters of all messages;
                                                                  300: 0, 3k: 0.5, 30k: 1 (long context)
        code          clamp(0.5·[``` fence] + 0.1·(code words + code symbols) + 8·({ } ;) per char)
                      code words: def class function return import lambda const let var async await
                      struct impl fn void public static include code python javascript typescript java
                      rust golang sql regex compile(r/d) bug traceback exception refactor implement(ation)
                      unit test(s) api algorithm recursion complexity, "c++" "stack trace" "big-o";
                      code symbols (case-sensitive): SELECT FROM WHERE JOIN "GROUP BY" #include => -> ()
        math          clamp(0.2·math words + 0.3·LaTeX + 3·operators per char + 1.5·digits per char)
                      math words: prove proof derive derivation derivative integral integrate equation
                      theorem lemma matrix eigenvalue(s) eigenvector probability variance limit converge(s)
                      convergence polynomial inequality modulo prime factori[sz]e solve calculate compute,
                      "expected value"; LaTeX: \\frac \\int \\sum \\sqrt \\lim ... or $...$;
                      operators: + - * / = ^ < > %
        reasoning     clamp(0.35·markers + 0.12·list items, the items only when there are 2 or more)
                      markers: "step by step", "first" followed anywhere by "then", "explain why",
                      "why does/do/is/are", compare/comparison, design, optimi[sz]e/-ation, tradeoff(s),
                      "trade-off", analy[sz]e, analysis, architecture, evaluate, debug(ging), plan,
                      justify, "pros and cons", "edge case"; list items: lines starting "1." "2)" "-" "*"
        constraints   clamp(0.2·matches): must should exactly ensure only require(d) without never
                      always, "at least" "at most" "no more than" "no less than" "do not" "don't"
        easy          [opens with a greeting, "what is", "who is", "define", "translate", "summarize",
                      "tl;dr", "tell me a joke" ...] · (1 − length)   (a long paste to translate is not easy)

    and ``z`` is the weighted sum (the weights say how strongly each feature signals a task a cheap model
    gets wrong; the bias scores a short prompt with no feature 0.08)::

        z = −2.5 + 1.8·length + 0.6·conversation + 1.6·code + 1.6·math + 2.0·reasoning
                 + 0.8·constraints − 2.0·easy

    "hi" and "What is the capital of France?" score 0.01, a one-line coding request ~0.13, a long
    multi-step coding or math task 0.9+. Scores are for ordering and calibration, not probabilities.
    """

    name = "heuristic"

    W_BIAS = -2.5
    W_LENGTH = 1.8
    W_CONVERSATION = 0.6
    W_CODE = 1.6
    W_MATH = 1.6
    W_REASONING = 2.0
    W_CONSTRAINTS = 0.8
    W_EASY = -2.0

    def features(self, messages: list[dict[str, Any]]) -> dict[str, float]:
        """Each feature in [0, 1], by name (for explanations and tests)."""
        last = ""
        total = 0
        for message in messages:
            text = message_text(message)
            total += len(text)
            if message.get("role") == "user":
                last = text
        if not last and messages:
            last = message_text(messages[-1])
        n = len(last)
        scan = last if n <= _SCAN_HEAD + _SCAN_TAIL else last[:_SCAN_HEAD] + "\n" + last[-_SCAN_TAIL:]
        low = scan.lower()
        m = max(len(scan), 1)

        length = _clamp((math.log10(1 + n) - 1.5) / 2.5)
        conversation = _clamp((math.log10(1 + total) - 2.5) / 2.0)

        hits = {_CODE: 0, _MATH: 0, _REASONING: 0, _CONSTRAINTS: 0}
        words = _WORDS
        for word in _WORD_RE.findall(low):
            feature = words.get(word)
            if feature is not None:
                hits[feature] += 1
        for phrase, feature in _PHRASES:
            if phrase in low:
                hits[feature] += low.count(phrase)
        first = low.find("first")
        if first >= 0 and low.find("then", first) >= 0:
            hits[_REASONING] += 1

        symbols = scan.count("{") + scan.count("}") + scan.count(";")
        code_tokens = sum(scan.count(token) for token in _CODE_SYMBOLS)
        code = _clamp((0.5 if _FENCE in scan else 0.0) + 0.1 * (hits[_CODE] + code_tokens) + 8.0 * symbols / m)

        operators = sum(scan.count(c) for c in _OPERATORS)
        digits = sum(scan.count(c) for c in _DIGITS)
        latex = len(_LATEX_RE.findall(scan)) if "\\" in scan or "$" in scan else 0
        math_ = _clamp(0.2 * hits[_MATH] + 0.3 * latex + 3.0 * operators / m + 1.5 * digits / m)

        items = len(_NUMBERED_RE.findall(scan))
        reasoning = _clamp(0.35 * hits[_REASONING] + (0.12 * items if items >= 2 else 0.0))
        constraints = _clamp(0.2 * hits[_CONSTRAINTS])
        easy = (1.0 - length) if _EASY_RE.match(low) else 0.0
        return {
            "length": length,
            "conversation": conversation,
            "code": code,
            "math": math_,
            "reasoning": reasoning,
            "constraints": constraints,
            "easy": easy,
        }

    def score(self, messages: list[dict[str, Any]]) -> float:
        f = self.features(messages)
        z = (
            self.W_BIAS
            + self.W_LENGTH * f["length"]
            + self.W_CONVERSATION * f["conversation"]
            + self.W_CODE * f["code"]
            + self.W_MATH * f["math"]
            + self.W_REASONING * f["reasoning"]
            + self.W_CONSTRAINTS * f["constraints"]
            + self.W_EASY * f["easy"]
        )
        return 1.0 / (1.0 + math.exp(-z))


_NEVER = math.nextafter(1.0, math.inf)  # above every score: nothing reaches it


class PremiumShareCalibrator:
    """The difficulty threshold that sends about ``share`` of calls to premium, from recent scores.

    ``threshold()`` is the (1 − share) quantile of the last ``window`` scores, as an order statistic: with
    the n scores sorted ascending, ``s[floor((1 − share)·n)]``, so ``score >= threshold`` holds for about
    ``share·n`` of them. Until 20 scores have been seen it is ``warmup_threshold``. ``share`` 0 gives a
    value above 1 (never premium) and 1 gives 0.0 (always), warm or not. Call ``threshold()`` before
    ``observe()``-ing the current score, so a decision depends only on the past.

    Ties: many calls can score exactly the same (a templated agent prompt, every short greeting). When the
    threshold falls inside such a block, "score >= threshold" would send the whole block to premium (60 %
    identical greetings and a 50 % share would give 100 % premium). ``tie_fraction()`` is the part of the
    block that should go premium to hit the share, ``(share·n − #above) / #equal``; the router sends a call
    scoring exactly the threshold to premium with that probability.

    Scores are kept sorted (insert and evict by bisection), so every call is O(log window) plus a short
    memmove: no sort per call.
    """

    WARMUP = 20

    def __init__(self, share: float, window: int = 500, warmup_threshold: float = 0.5) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.share = share
        self.window = window
        self.warmup_threshold = warmup_threshold
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        self.seen = 0

    @property
    def warm(self) -> bool:
        return self.seen >= self.WARMUP

    def threshold(self) -> float:
        if self.share <= 0.0:
            return _NEVER
        if self.share >= 1.0:
            return 0.0
        if not self.warm or not self._sorted:
            return self.warmup_threshold
        n = len(self._sorted)
        return self._sorted[min(n - 1, int((1.0 - self.share) * n))]

    def tie_fraction(self) -> float:
        """Probability that a score exactly at ``threshold()`` goes premium (1.0 while warming up)."""
        if not self.warm or not self._sorted or self.share <= 0.0 or self.share >= 1.0:
            return 1.0
        t = self.threshold()
        lo = bisect.bisect_left(self._sorted, t)
        hi = bisect.bisect_right(self._sorted, t)
        n = len(self._sorted)
        want = self.share * n - (n - hi)
        return min(1.0, max(0.0, want / (hi - lo)))

    def observe(self, score: float) -> None:
        if not math.isfinite(score):
            return  # a NaN would corrupt the sorted window
        self.seen += 1
        self._recent.append(score)
        bisect.insort(self._sorted, score)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
