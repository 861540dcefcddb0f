"""Incremental Server-Sent Events decoder (the framing every streaming LLM API uses).

Bytes arrive in arbitrary pieces; an event is complete at a blank line. The decoder is fed each network
read and returns the events it completed, so the caller can stamp every event with the arrival time of
the read that completed it.
"""

from __future__ import annotations


class SSEDecoder:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str | None, bytes]]:
        """Return ``(event_name, data)`` for each event completed by ``data``."""
        buffer = self._buffer + data if self._buffer else data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # a CRLF split across two reads: keep the CR for the next one
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n")
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop() + held
        events: list[tuple[str | None, bytes]] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:  # the common case: one data line
                events.append((None, block[6:]))
                continue
            name: str | None = None
            data_lines: list[bytes] = []
            for line in block.split(b"\n"):
                if not line or line.startswith(b":"):  # comment / keep-alive
                    continue
                field, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if field == b"data":
                    data_lines.append(value)
                elif field == b"event":
                    name = value.decode("utf-8", "replace")
            if data_lines or name is not None:
                events.append((name, b"\n".join(data_lines)))
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (non-empty at stream end means the stream was cut)."""
        return self._buffer
