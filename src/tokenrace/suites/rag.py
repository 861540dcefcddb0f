"""The rag suite: find facts planted in a long document, at several context lengths.

Each request is a seeded document of filler prose (sentence templates written for tokenrace, with no digits
and none of the facts' names, so nothing in the filler can be mistaken for an answer) with ``facts``
planted sentences at spread-out depths ("The access code for the Orion vault is 7341."), followed by
questions about ``ask`` of them. Prompts are sized in cl100k tokens to each of ``contexts`` (within a
few percent), so a report can show TTFT and output speed against context length: the bucket is in the
``reference`` and in the prompt id (``rag-4k-17``). ``max_context`` (the endpoint's window) drops the lengths
whose prompt plus ``max_tokens`` would not fit; the endpoint's own tokenizer may count differently.

Score: the fraction of asked facts whose value appears in the answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tokenrace.records import RequestRecord
from tokenrace.suites import check_options, cut_off_note, make_request, resolve_nonce, unique_tag
from tokenrace.suites.base import Score, SuiteError
from tokenrace.tokenizer import count_tokens
from tokenrace.workloads import WorkloadRequest

DEFAULT_CONTEXTS = (1000, 4000, 16000)
DEFAULT_PER_CONTEXT = 5  # documents per context length when no sample is given
MIN_CONTEXT = 300  # room for the instructions, the facts and the questions (more with many facts)
TOLERANCE = 0.01  # documents are trimmed to within 1% of the target (the tests allow 5%)
TAG_ALLOWANCE = 12  # tokens the per-request unique tag may add to a prompt

# --- filler: written for tokenrace ----------------------------------------------------------------------

PLACES = (
    "the harbour town", "the old mill", "the valley road", "the village square", "the morning market",
    "the river ferry", "the hill orchard", "the lighthouse", "the weavers' hall", "the stone bridge",
    "the northern pasture", "the railway platform", "the abbey garden", "the fishing pier", "the chestnut grove",
    "the clock tower", "the salt marsh", "the county library", "the pottery kiln", "the upland farm",
)  # fmt: skip
ACTORS = (
    "the ferryman", "a travelling choir", "the schoolteacher", "two shepherds", "the baker's apprentice",
    "a group of cyclists", "the night watchman", "the beekeepers", "a family of potters", "the harbour pilot",
    "an old carpenter", "the village council", "a pair of botanists", "the postmistress", "the stationmaster",
    "a band of fiddlers",
)  # fmt: skip
ACTIONS = (
    "repaired the fences", "counted the sheep twice", "planted rows of beans", "painted the shutters blue",
    "argued about the weather", "swept the cobbles", "tuned an old piano", "hung lanterns along the path",
    "sorted letters by candlelight", "mended torn nets", "picked the last of the plums",
    "stacked firewood against the wall", "sang until the fog lifted", "traded stories over tea",
    "measured the depth of the well", "collected reeds for baskets",
)  # fmt: skip
TIMES = (
    "in early spring", "on a grey morning", "after the harvest", "during the long summer", "before the first frost",
    "on market day", "late in the evening", "at the turn of the season", "while the tide was out",
    "under a pale sky",
)  # fmt: skip
OBSERVATIONS = (
    "the air smelled of rain and cut grass", "the river ran slow and brown", "the hills were covered in heather",
    "smoke rose from every chimney", "gulls circled above the rooftops", "the wind carried the sound of bells",
    "the fields turned gold within a week", "the roads were thick with mud", "nobody remembered a quieter year",
    "the light lingered long after supper",
)  # fmt: skip
REFLECTIONS = (
    "Some said it was the best season in living memory.", "Few visitors ever noticed the difference.",
    "The change was slow, but nobody complained.", "It became a story told to every newcomer.",
    "Later accounts disagree on the details.", "Most of the neighbours took it in their stride.",
    "The local paper gave it only a short paragraph.", "Children still play games inspired by it.",
)  # fmt: skip
TEMPLATES = (
    "{Time}, {actor} {action} near {place}.",
    "Near {place}, {actor} {action} while {observation}.",
    "{Actor} {action} {time}, and {observation}.",
    "It is said that {actor} once {action} beside {place}.",
    "{Place} was quiet {time}; {observation}.",
    "By the time {actor} {action}, {observation}.",
    "Nobody at {place} was surprised when {actor} {action} {time}.",
    "{Observation} the day {actor} {action}.",
)

# --- facts ------------------------------------------------------------------------------------------------

NAMES = (
    "Orion", "Vega", "Lyra", "Altair", "Cygnus", "Draco", "Perseus", "Andromeda", "Cassiopeia", "Pegasus",
    "Hydra", "Phoenix", "Aquila", "Carina", "Sirius", "Rigel", "Polaris", "Deneb", "Antares", "Capella",
)  # fmt: skip
PASS_ADJECTIVES = ("amber", "cobalt", "silent", "velvet", "frozen", "hollow", "crimson", "brisk", "lunar", "rustic")
PASS_NOUNS = ("falcon", "lantern", "harbor", "thistle", "meadow", "compass", "anchor", "willow", "ember", "pebble")
CONTACT_FIRST = ("Imogen", "Rafael", "Soraya", "Tobias", "Annika", "Mateo", "Leonie", "Caspar", "Yara", "Emil")
CONTACT_LAST = ("Brandt", "Okoro", "Lindgren", "Vasquez", "Hartley", "Novak", "Ferreira", "Ashdown", "Kerr", "Mori")


ValueMaker = Callable[[random.Random], str]


def _digits(n: int) -> ValueMaker:
    return lambda rng: str(rng.randint(10 ** (n - 1), 10**n - 1))


# (statement, question, value maker): values are distinctive, so finding one in an answer is no accident.
FACT_KINDS: tuple[tuple[str, str, ValueMaker], ...] = (
    ("The access code for the {name} vault is {value}.", "What is the access code for the {name} vault?", _digits(4)),
    (
        "The serial number of the {name} generator is {value}.",
        "What is the serial number of the {name} generator?",
        _digits(6),
    ),
    (
        "The password for the {name} terminal is {value}.",
        "What is the password for the {name} terminal?",
        lambda rng: f"{rng.choice(PASS_ADJECTIVES)}-{rng.choice(PASS_NOUNS)}",
    ),
    (
        "The {name} shipment is stored in warehouse bay {value}.",
        "In which warehouse bay is the {name} shipment stored?",
        lambda rng: f"{rng.choice('BCDFGHKMRTWX')}{rng.randint(10, 99)}",
    ),
    (
        "The contact person for the {name} project is {value}.",
        "Who is the contact person for the {name} project?",
        lambda rng: f"{rng.choice(CONTACT_FIRST)} {rng.choice(CONTACT_LAST)}",
    ),
)


@dataclass(frozen=True, slots=True)
class Document:
    context: int
    index: int
    text: str  # the prompt without its unique tag
    tokens: int  # cl100k tokens of ``text``
    facts: list[dict[str, Any]]  # every planted fact: question, value, depth (0 = start of the document)
    asked: list[dict[str, Any]]  # the facts the questions ask for


def _min_context(facts: int, ask: int) -> int:
    """A prompt small enough to be mostly instructions and facts would not test retrieval."""
    return max(MIN_CONTEXT, 4 * (40 + 20 * facts + 15 * ask))


def bucket_label(context: int) -> str:
    """``1000`` → ``1k``, ``1500`` → ``1.5k``, ``32768`` → ``32768`` (no dashes: it sits in the prompt id)."""
    return f"{context / 1000:g}k" if context >= 1000 and context % 100 == 0 else str(context)


def _filler(rng: random.Random) -> str:
    if rng.random() < 0.12:
        return rng.choice(REFLECTIONS)
    words = {
        "place": rng.choice(PLACES),
        "actor": rng.choice(ACTORS),
        "action": rng.choice(ACTIONS),
        "time": rng.choice(TIMES),
        "observation": rng.choice(OBSERVATIONS),
    }
    words.update({key.capitalize(): value[0].upper() + value[1:] for key, value in list(words.items())})
    return rng.choice(TEMPLATES).format(**words)


def _facts(rng: random.Random, count: int) -> list[dict[str, Any]]:
    facts: list[dict[str, Any]] = []
    values: set[str] = set()
    for name in rng.sample(NAMES, count):
        statement, question, make_value = rng.choice(FACT_KINDS)
        value = make_value(rng)
        while value in values:
            value = make_value(rng)
        values.add(value)
        facts.append(
            {
                "statement": statement.format(name=name, value=value),
                "question": question.format(name=name),
                "value": value,
            }
        )
    return facts


HEADER = "Read the document below, then answer the questions after it using only the document.\n\n<document>\n"


def _footer(asked: Sequence[dict[str, Any]]) -> str:
    questions = "\n".join(f"{number}. {fact['question']}" for number, fact in enumerate(asked, 1))
    return f"\n</document>\n\nQuestions:\n{questions}\n\nAnswer briefly, one line per question."


def build_document(seed: int, context: int, index: int, facts: int, ask: int) -> Document:
    """A prompt of ``context`` cl100k tokens (±1%) with ``facts`` facts at stratified random depths;
    depends only on its arguments, so ``rag-4k-3`` is the same whatever else the run contains."""
    rng = random.Random(f"rag:{seed}:{context}:{index}")
    planted = _facts(rng, facts)
    asked = rng.sample(planted, ask)
    footer = _footer(asked)
    fixed = count_tokens(HEADER + footer) + sum(count_tokens(" " + f["statement"]) for f in planted)
    filler: list[str] = []
    used = 0
    while used < context - fixed:
        sentence = _filler(rng)
        filler.append(sentence)
        used += count_tokens(" " + sentence)
    # Each fact goes into its own stratum of the document (spread out, still random), in random order.
    rng.shuffle(planted)
    slots = sorted(rng.uniform(i / facts, (i + 1) / facts) for i in range(facts))
    breaks = [rng.randint(3, 7) for _ in range(len(filler) + facts)]

    def assemble(sentences: list[str]) -> tuple[str, list[float]]:
        items = list(sentences)
        for offset, (slot, fact) in enumerate(zip(slots, planted, strict=True)):
            items.insert(min(round(slot * len(sentences)) + offset, len(items)), fact["statement"])
        paragraphs, start, k = [], 0, 0
        while start < len(items):
            paragraphs.append(" ".join(items[start : start + breaks[k]]))
            start, k = start + breaks[k], k + 1
        body = "\n\n".join(paragraphs)
        return HEADER + body + footer, [body.index(f["statement"]) / max(len(body), 1) for f in planted]

    # The sum of sentence counts misses the joins: correct it on exact counts, coarsely (~15 tokens a
    # sentence) then one sentence at a time, keeping the closest fit (short prompts cannot hit 1%).
    best: tuple[int, str, list[float]] | None = None
    direction = 0
    while True:
        text, depths = assemble(filler)
        total = count_tokens(text)
        if best is None or abs(total - context) < abs(best[0] - context):
            best = (total, text, depths)
        if abs(total - context) <= context * TOLERANCE:
            break
        step = 1 if total < context else -1
        if direction and step != direction:  # stepped over the target: the best seen is as close as it gets
            break
        direction = step
        count = max(1, abs(total - context) // 30)
        if step < 0:
            if not filler:
                break
            del filler[-count:]
        else:
            filler.extend(_filler(rng) for _ in range(count))
            breaks.extend(rng.randint(3, 7) for _ in range(count))
    total, text, depths = best
    for fact, depth in zip(planted, depths, strict=True):
        fact["depth"] = round(depth, 3)
    facts_out = [{"question": f["question"], "value": f["value"], "depth": f["depth"]} for f in planted]
    asked_out = [{"question": f["question"], "value": f["value"], "depth": f["depth"]} for f in asked]
    return Document(context, index, text, total, facts_out, asked_out)


def _normal(text: str) -> str:
    """Case, hyphens and spacing do not matter; a thousands comma inside a number does not either."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.casefold())
    return " ".join(re.sub(r"[-‐‑–—_]", " ", text).split())


def value_found(value: str, answer: str) -> bool:
    """``value`` as a whole word (or words) in ``answer``: 7341 is not found in 17341."""
    pattern = r"(?<![\w])" + re.escape(_normal(value)) + r"(?![\w])"
    return re.search(pattern, _normal(answer)) is not None


class RagSuite:
    name = "rag"
    scored = True

    def __init__(
        self,
        *,
        sample: int | None = None,
        max_tokens: int = 256,
        contexts: Sequence[int] = DEFAULT_CONTEXTS,
        max_context: int | None = None,
        facts: int = 4,
        ask: int = 2,
        nonce: str | None = None,
    ) -> None:
        check_options(sample, max_tokens)
        if isinstance(contexts, int):
            contexts = (contexts,)
        if not contexts or any(isinstance(c, bool) or not isinstance(c, int) or c < MIN_CONTEXT for c in contexts):
            raise SuiteError(f"rag: contexts must be whole numbers of tokens >= {MIN_CONTEXT}, got {contexts!r}")
        if max_context is not None and (isinstance(max_context, bool) or not isinstance(max_context, int)):
            raise SuiteError(f"rag: max_context must be a whole number of tokens, got {max_context!r}")
        if not 1 <= facts <= len(NAMES):
            raise SuiteError(f"rag: facts must be between 1 and {len(NAMES)}, got {facts}")
        if not 1 <= ask <= facts:
            raise SuiteError(f"rag: ask must be between 1 and facts ({facts}), got {ask}")
        need = _min_context(facts, ask)
        if min(contexts) < need:
            raise SuiteError(f"rag: {facts} facts and {ask} questions need contexts of at least {need} tokens")
        wanted = sorted(set(contexts))
        self.contexts = tuple(c for c in wanted if max_context is None or self._fits(c, max_context, max_tokens))
        self.skipped = tuple(c for c in wanted if c not in self.contexts)
        if not self.contexts:
            raise SuiteError(
                f"rag: no context length fits max_context {max_context} with max_tokens {max_tokens} "
                f"(asked for {', '.join(map(str, wanted))}; at least {need} + max_tokens is needed)"
            )
        self.sample = sample
        self.max_tokens = max_tokens
        self.max_context = max_context
        self.facts = facts
        self.ask = ask
        self.nonce = nonce
        per = {c: self._documents_per_context(i) for i, c in enumerate(self.contexts)}
        lengths = ", ".join(f"{bucket_label(c)}×{n}" for c, n in per.items() if n)
        skipped = (
            f"; {', '.join(map(bucket_label, self.skipped))} skipped (over max_context {max_context} with max_tokens)"
            if self.skipped
            else ""
        )
        self.description = (
            f"rag: recall of {ask} of {facts} facts planted in filler documents of {lengths} cl100k tokens{skipped}"
        )

    @staticmethod
    def _fits(context: int, max_context: int, max_tokens: int) -> bool:
        return context * (1 + TOLERANCE) + TAG_ALLOWANCE + max_tokens <= max_context

    def _documents_per_context(self, position: int) -> int:
        """``sample`` is a total across lengths, dealt round-robin; without it each length gets 5."""
        if self.sample is None:
            return DEFAULT_PER_CONTEXT
        return len(range(position, self.sample, len(self.contexts)))

    def documents(self, seed: int = 0) -> Iterator[Document]:
        """Every distinct document of a seed, built on demand (the long ones take a moment)."""
        for position, context in enumerate(self.contexts):
            for index in range(self._documents_per_context(position)):
                yield build_document(seed, context, index, self.facts, self.ask)

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        """Context lengths in turn (short runs still see each), documents reshuffled each pass.

        Every document is built and counted here, when the run asks for its request stream and before
        the first send: building (or tokenizing) a long prompt inside ``next()`` would stall the event
        loop while other responses stream in, and delay their timestamps."""
        rng = random.Random(seed)
        nonce = resolve_nonce(self.nonce)
        header_tokens = count_tokens(HEADER)
        shelves: list[list[Document]] = []
        for position, context in enumerate(self.contexts):
            documents = [
                build_document(seed, context, index, self.facts, self.ask)
                for index in range(self._documents_per_context(position))
            ]
            if self.max_context is not None:  # the tag adds a few tokens per request: keep a margin
                limit = self.max_context - self.max_tokens - TAG_ALLOWANCE
                documents = [d for d in documents if d.tokens <= limit]
            shelves.append(documents)
        return self._stream(shelves, rng, nonce, header_tokens)

    def _stream(
        self, shelves: list[list[Document]], rng: random.Random, nonce: str, header_tokens: int
    ) -> Iterator[WorkloadRequest]:
        if not any(shelves):
            return
        number = 0
        while True:
            orders = [rng.sample(shelf, len(shelf)) for shelf in shelves]
            for k in range(max(map(len, orders))):
                for order in orders:
                    if k < len(order):
                        document, tag = order[k], unique_tag(nonce, number)
                        # Only the tag and the header it touches change: count just them (exact, tested).
                        tokens = document.tokens - header_tokens + count_tokens(tag + HEADER)
                        yield self._request(document, tag, tokens)
                        number += 1

    def _request(self, document: Document, tag: str, tokens: int) -> WorkloadRequest:
        bucket = bucket_label(document.context)
        return make_request(
            f"rag-{bucket}-{document.index}",
            tag + document.text,
            suite=self.name,
            reference={"context": document.context, "bucket": bucket, "facts": document.facts, "asked": document.asked},
            max_tokens=self.max_tokens,
            input_tokens=tokens,
        )

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        """The fraction of asked facts whose value appears in the answer; the reason names the missed ones."""
        reference = request.reference if isinstance(request.reference, dict) else {}
        asked = reference.get("asked")
        if not isinstance(asked, list) or not asked or not all(isinstance(f, dict) and "value" in f for f in asked):
            return Score(0.0, f"bad reference: {request.reference!r}"[:200])
        answer = record.output_text
        if not answer.strip():
            return Score(0.0, "empty answer" + cut_off_note(record.finish_reason))
        missed = [f for f in asked if not value_found(str(f["value"]), answer)]
        if not missed:
            return Score(1.0, "ok")
        detail = "; ".join(f"{f.get('question', '?')} expected {f['value']}" for f in missed)
        note = cut_off_note(record.finish_reason)
        return Score(
            (len(asked) - len(missed)) / len(asked), f"missed {len(missed)}/{len(asked)}: {detail}{note}"[:500]
        )
