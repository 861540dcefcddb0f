"""The structured suite: pull a record out of prose into JSON that follows a JSON schema.

Each request is a short seeded text about an order, a person or an event with planted field values
(and a distractor: a second city that is not the answer). The request sends the schema both in the prompt
and as OpenAI's ``response_format`` (``json_schema``, strict), which llama.cpp, vLLM and OpenAI enforce,
so the suite measures the speed of constrained decoding as well as extraction.

Scoring: 0 when the answer is not JSON (a ```json fence or JSON amid prose is accepted) or breaks the schema;
otherwise the fraction of fields equal to the planted values (strings up to case and whitespace, numbers by
value). The validator is a small one for the schema subset used here (object, properties, required,
additionalProperties, items, type, enum), since ``jsonschema`` is not a dependency.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from tokenrace.records import RequestRecord
from tokenrace.suites import check_options, cut_off_note, endless, make_request, resolve_nonce, unique_tag
from tokenrace.suites.base import Score, SuiteError
from tokenrace.workloads import WorkloadRequest

KINDS = ("order", "person", "event")
DEFAULT_SAMPLE = 30

# Word lists written for tokenrace; no real people, orders or events.
FIRST_NAMES = (
    "Amara", "Bastian", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiroshi", "Ingrid", "Joaquin",
    "Keiko", "Lars", "Malika", "Nikolai", "Oona", "Pedro", "Quentin", "Rosa", "Sven", "Tamsin", "Ugo",
    "Vesna", "Wendell", "Ximena", "Yusuf", "Zofia",
)  # fmt: skip
LAST_NAMES = (
    "Albrecht", "Barros", "Castellano", "Delacroix", "Eriksen", "Fontaine", "Gallagher", "Haddad", "Iwasaki",
    "Jovanovic", "Kowalczyk", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rinaldi",
    "Sandoval", "Tanaka", "Underwood", "Varga", "Whitfield", "Yilmaz", "Zeller",
)  # fmt: skip
CITIES = (
    "Lisbon", "Rotterdam", "Krakow", "Valencia", "Gothenburg", "Porto", "Lyon", "Graz", "Tampere", "Bilbao",
    "Ghent", "Bergen", "Brno", "Trieste", "Aarhus", "Cork", "Leipzig", "Seville", "Turin", "Utrecht",
)  # fmt: skip
PRODUCTS = (
    "espresso machine", "standing desk", "trail running shoes", "cast-iron skillet", "mechanical keyboard",
    "camping tent", "electric kettle", "office chair", "yoga mat", "rice cooker", "bicycle helmet",
    "desk lamp", "hiking backpack", "water filter", "wireless headphones",
)  # fmt: skip
OCCUPATIONS = (
    "architect", "nurse", "carpenter", "data analyst", "pharmacist", "teacher", "electrician", "translator",
    "veterinarian", "pilot", "chef", "librarian", "civil engineer", "photographer",
)  # fmt: skip
VENUES = (
    "Riverside Hall", "Old Granary", "Harbour Pavilion", "Lantern Theatre", "Northgate Arena",
    "Glasshouse Gallery", "Millbrook Conference Centre", "Copper Room",
)  # fmt: skip
EVENT_ADJECTIVES = ("Autumn", "Midnight", "Open", "Northern", "Green", "Future", "Winter", "Coastal")
EVENT_NOUNS = (
    ("Jazz Night", "concert"), ("String Quartet Evening", "concert"), ("Data Summit", "conference"),
    ("Design Conference", "conference"), ("Pottery Workshop", "workshop"), ("Film Festival", "festival"),
    ("Book Fair", "fair"), ("Robotics Meetup", "meetup"), ("Food Market", "market"), ("Chess Open", "tournament"),
)  # fmt: skip
CATEGORIES = sorted({category for _, category in EVENT_NOUNS})
CURRENCIES = {"EUR": ("€", "euros"), "USD": ("$", "US dollars"), "GBP": ("£", "pounds sterling")}
EMAIL_DOMAINS = ("example.org", "mail.example.com", "post.example.net")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
SMALL_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _object(properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A strict object schema (OpenAI's strict mode wants every field required, no extra ones)."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


DATE = {"type": "string", "description": "YYYY-MM-DD"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "order": _object(
        {
            "order_id": {"type": "string"},
            "customer_name": {"type": "string"},
            "product": {"type": "string"},
            "quantity": {"type": "integer"},
            "unit_price": {"type": "number", "description": "price of one item, without currency sign"},
            "currency": {"type": "string", "enum": sorted(CURRENCIES)},
            "order_date": DATE,
            "delivery_city": {"type": "string"},
            "gift_wrap": {"type": "boolean"},
        }
    ),
    "person": _object(
        {
            "full_name": {"type": "string"},
            "age": {"type": "integer"},
            "city": {"type": "string", "description": "where the person lives now"},
            "occupation": {"type": "string"},
            "email": {"type": "string"},
            "newsletter": {"type": "boolean", "description": "subscribed to the newsletter"},
        }
    ),
    "event": _object(
        {
            "title": {"type": "string"},
            "category": {"type": "string", "enum": CATEGORIES},
            "date": DATE,
            "start_time": {"type": "string", "description": "24-hour HH:MM"},
            "venue": {"type": "string"},
            "city": {"type": "string"},
            "capacity": {"type": "integer"},
            "ticket_price": {"type": "number", "description": "in euros, without currency sign"},
        }
    ),
}


# --- text generation -------------------------------------------------------------------------------------


def _date(rng: random.Random) -> tuple[str, str]:
    """A date as ISO (the planted value) and as prose, in one of several styles."""
    year, month, day = rng.randint(2022, 2026), rng.randint(1, 12), rng.randint(1, 28)
    ordinal = f"{day}{'th' if 11 <= day <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"
    prose = rng.choice(
        (
            f"{day} {MONTHS[month - 1]} {year}",
            f"{MONTHS[month - 1]} {day}, {year}",
            f"the {ordinal} of {MONTHS[month - 1]} {year}",
        )
    )
    return f"{year:04d}-{month:02d}-{day:02d}", prose


def _time(rng: random.Random) -> tuple[str, str]:
    hour, minute = rng.randint(9, 21), rng.choice((0, 15, 30, 45))
    twelve, half = (hour - 12 if hour > 12 else hour), ("pm" if hour >= 12 else "am")
    part = "in the morning" if hour < 12 else "in the afternoon" if hour < 18 else "in the evening"
    prose = rng.choice((f"{twelve}:{minute:02d} {half}", f"{hour:02d}:{minute:02d}", f"{twelve}:{minute:02d} {part}"))
    return f"{hour:02d}:{minute:02d}", prose


def _count(rng: random.Random, value: int) -> str:
    return SMALL_NUMBERS[value - 1] if value <= len(SMALL_NUMBERS) and rng.random() < 0.5 else str(value)


def _two_cities(rng: random.Random) -> tuple[str, str]:
    city, other = rng.sample(CITIES, 2)
    return city, other


def _order(rng: random.Random) -> tuple[dict[str, Any], str]:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    order_id = f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randint(10000, 99999)}"
    iso, date = _date(rng)
    quantity = rng.randint(1, 12)
    price = round(rng.randint(5, 900) + rng.choice((0, 0.5, 0.99, 0.25)), 2)
    currency = rng.choice(sorted(CURRENCIES))
    symbol, words = CURRENCIES[currency]
    price_text = rng.choice((f"{symbol}{price:.2f}", f"{price:.2f} {words}"))
    product = rng.choice(PRODUCTS)
    city, warehouse = _two_cities(rng)
    gift = rng.random() < 0.5
    fields = {
        "order_id": order_id,
        "customer_name": name,
        "product": product,
        "quantity": quantity,
        "unit_price": price,
        "currency": currency,
        "order_date": iso,
        "delivery_city": city,
        "gift_wrap": gift,
    }
    opening = rng.choice(
        (
            f"Order {order_id} was placed on {date} by {name}.",
            f"On {date}, {name} placed order {order_id}.",
            f"{name} submitted an order (number {order_id}) on {date}.",
        )
    )
    rest = [
        rng.choice(
            (
                f"It is for {_count(rng, quantity)} × {product} at {price_text} each.",
                f"Item: {product}; quantity: {_count(rng, quantity)}; unit price: {price_text}.",
                f"Each {product} costs {price_text}, and the quantity ordered is {_count(rng, quantity)}.",
            )
        ),
        rng.choice(
            (
                f"The parcel is to be delivered to {city}.",
                f"Please deliver it to the customer's address in {city}.",
                f"Delivery goes to {city}.",
            )
        ),
        rng.choice((f"It ships from our warehouse in {warehouse}.", f"Stock is held in {warehouse}.")),
        rng.choice(("Gift wrapping was requested.", "The customer would like it gift-wrapped."))
        if gift
        else rng.choice(("No gift wrapping is needed.", "The customer declined gift wrapping.")),
    ]
    rng.shuffle(rest)
    return fields, " ".join([opening, *rest])


def _person(rng: random.Random) -> tuple[dict[str, Any], str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    age = rng.randint(19, 78)
    occupation = rng.choice(OCCUPATIONS)
    city, hometown = _two_cities(rng)
    email = f"{first}.{last}@{rng.choice(EMAIL_DOMAINS)}".lower()
    newsletter = rng.random() < 0.5
    fields = {
        "full_name": f"{first} {last}",
        "age": age,
        "city": city,
        "occupation": occupation,
        "email": email,
        "newsletter": newsletter,
    }
    article = "an" if occupation[0] in "aeiou" else "a"
    opening = rng.choice(
        (
            f"{first} {last} is {article} {occupation} aged {age} who lives in {city}.",
            f"{first} {last}, {age}, works as {article} {occupation} and lives in {city}.",
            f"Meet {first} {last}: {age} years old, {article} {occupation}, living in {city}.",
        )
    )
    rest = [
        rng.choice((f"{first} grew up in {hometown} before moving.", f"{first} was born in {hometown}.")),
        rng.choice((f"{first} can be reached at {email}.", f"Contact email: {email}.")),
        rng.choice((f"{first} signed up for the monthly newsletter.", f"{first} subscribes to our newsletter."))
        if newsletter
        else rng.choice((f"{first} asked not to receive the newsletter.", f"{first} is not on the newsletter list.")),
    ]
    rng.shuffle(rest)
    return fields, " ".join([opening, *rest])


def _event(rng: random.Random) -> tuple[dict[str, Any], str]:
    noun, category = rng.choice(EVENT_NOUNS)
    title = f"{rng.choice(EVENT_ADJECTIVES)} {noun}"
    iso, date = _date(rng)
    clock, time_text = _time(rng)
    venue = rng.choice(VENUES)
    city, previous = _two_cities(rng)
    capacity = rng.choice((40, 60, 80, 120, 150, 200, 250, 300, 450, 600, 800, 1200))
    price = round(rng.randint(5, 95) + rng.choice((0, 0.5)), 2)
    fields = {
        "title": title,
        "category": category,
        "date": iso,
        "start_time": clock,
        "venue": venue,
        "city": city,
        "capacity": capacity,
        "ticket_price": price,
    }
    price_text = rng.choice((f"€{price:.2f}", f"{price:g} euros"))
    opening = rng.choice(
        (
            f"The {title}, a {category}, takes place at the {venue} in {city} on {date}.",
            f"On {date} the {venue} in {city} hosts the {title} ({category}).",
        )
    )
    rest = [
        rng.choice((f"It starts at {time_text}.", f"The programme begins at {time_text}.")),
        rng.choice((f"The venue holds {capacity} people.", f"Up to {capacity} guests can attend.")),
        rng.choice((f"Tickets cost {price_text}.", f"Admission is {price_text} per person.")),
        rng.choice((f"Last year's edition was held in {previous}.", f"The organisers are based in {previous}.")),
    ]
    rng.shuffle(rest)
    return fields, " ".join([opening, *rest])


GENERATORS: dict[str, Callable[[random.Random], tuple[dict[str, Any], str]]] = {
    "order": _order,
    "person": _person,
    "event": _event,
}


# --- scoring ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_MISSING = object()


def parse_json_answer(text: str) -> Any:
    """The JSON in a model's answer: the whole text, else a fenced block, else the outermost ``{...}``;
    ``_MISSING`` when there is none (JSON ``null`` is a valid, if wrong, answer)."""
    text = _THINK.sub("", text or "").strip()
    candidates = [text, *reversed(_FENCE.findall(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return orjson.loads(candidate.strip())
        except orjson.JSONDecodeError:
            continue
    return _MISSING


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "number" or isinstance(value, int) or float(value).is_integer()  # JSON: 3.0 is an integer


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Schema violations as ``path: problem`` (empty when valid); unknown keywords are ignored."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_ok(value, kind) for kind in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {_type_name(value)}"]
    errors: list[str] = []
    if "enum" in schema and not any(_type_name(value) == _type_name(e) and value == e for e in schema["enum"]):
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        errors += [f"{path}: missing {name!r}" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                errors += validate(item, properties[name], f"{path}.{name}")
            elif extra is False:
                errors.append(f"{path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, f"{path}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{index}]")
    return errors


def _normal(text: str) -> str:
    text = " ".join(text.split()).casefold().strip(" .")
    return text[4:] if text.startswith("the ") else text


def same_value(expected: Any, got: Any) -> bool:
    """Planted vs extracted: strings up to case/whitespace/a leading "the", numbers by value."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return isinstance(expected, bool) and isinstance(got, bool) and expected == got
    if isinstance(expected, int | float):
        return isinstance(got, int | float) and math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, str):
        return isinstance(got, str) and _normal(expected) == _normal(got)
    return bool(expected == got)


def _show(value: Any) -> str:
    return orjson.dumps(value).decode() if value is not _MISSING else "nothing"


class StructuredSuite:
    name = "structured"
    scored = True

    def __init__(
        self,
        *,
        sample: int | None = None,
        max_tokens: int = 512,
        kinds: tuple[str, ...] | list[str] = KINDS,
        response_format: bool = True,
        nonce: str | None = None,
    ) -> None:
        check_options(sample, max_tokens)
        unknown = [k for k in kinds if k not in SCHEMAS]
        if unknown or not kinds:
            raise SuiteError(f"structured: unknown kinds {unknown or '(none given)'}; valid kinds: {', '.join(KINDS)}")
        self.sample = sample
        self.max_tokens = max_tokens
        self.kinds = tuple(kinds)
        self.response_format = response_format
        self.nonce = nonce
        how = "response_format json_schema (strict)" if response_format else "schema in the prompt only"
        self.description = (
            f"structured: {sample or DEFAULT_SAMPLE} texts ({', '.join(self.kinds)}) to JSON under a schema, "
            f"{how}; fraction of fields right, 0 when not JSON or off-schema"
        )

    def records(self, seed: int = 0) -> list[tuple[str, int, dict[str, Any], str]]:
        """The (kind, index, planted fields, text) items of a seed; item i depends only on (seed, i)."""
        items = []
        for index in range(self.sample or DEFAULT_SAMPLE):
            kind = self.kinds[index % len(self.kinds)]
            fields, text = GENERATORS[kind](random.Random(f"structured:{seed}:{kind}:{index}"))
            items.append((kind, index, fields, text))
        return items

    def requests(self, seed: int = 0) -> Iterator[WorkloadRequest]:
        rng = random.Random(seed)
        nonce = resolve_nonce(self.nonce)
        for number, (kind, index, fields, text) in enumerate(endless(self.records(seed), rng)):
            schema = SCHEMAS[kind]
            prompt = (
                f"{unique_tag(nonce, number)}Extract the {kind} described in the text below into a JSON object "
                f"that follows this JSON schema:\n{orjson.dumps(schema).decode()}\n\n"
                "Write dates as YYYY-MM-DD and times as 24-hour HH:MM. Reply with the JSON object only.\n\n"
                f"Text: {text}"
            )
            params: dict[str, Any] = {}
            if self.response_format:
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": f"{kind}_record", "schema": schema, "strict": True},
                }
            yield make_request(
                f"structured-{kind}-{index}",
                prompt,
                suite=self.name,
                reference={"kind": kind, "schema": schema, "expected": fields},
                max_tokens=self.max_tokens,
                params=params,
            )

    def score(self, request: WorkloadRequest, record: RequestRecord) -> Score:
        """0 for no JSON or a schema violation; else the fraction of planted fields extracted right."""
        reference = request.reference if isinstance(request.reference, dict) else {}
        schema, expected = reference.get("schema"), reference.get("expected")
        if not isinstance(schema, dict) or not isinstance(expected, dict) or not expected:
            return Score(0.0, f"bad reference: {request.reference!r}"[:200])
        if not record.output_text.strip():
            return Score(0.0, "empty answer" + cut_off_note(record.finish_reason))
        answer = parse_json_answer(record.output_text)
        if answer is _MISSING:
            return Score(0.0, "not valid JSON" + cut_off_note(record.finish_reason))
        errors = validate(answer, schema)
        if errors:
            more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
            return Score(0.0, f"schema violation: {'; '.join(errors[:3])}{more}")
        wrong = [name for name, value in expected.items() if not same_value(value, answer.get(name, _MISSING))]
        if not wrong:
            return Score(1.0, "ok")
        details = ", ".join(
            f"{name} (expected {_show(expected[name])}, got {_show(answer.get(name, _MISSING))})" for name in wrong
        )
        return Score(
            (len(expected) - len(wrong)) / len(expected), f"{len(wrong)}/{len(expected)} fields wrong: {details}"[:500]
        )
