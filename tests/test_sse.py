from tokenrace.sse import SSEDecoder


def test_events_split_across_reads_are_completed_by_the_read_that_ends_them():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\n") == []
    assert decoder.feed(b"\ndata: [DONE]\n\n") == [(None, b'{"a": 1}'), (None, b"[DONE]")]
    assert decoder.pending == b""


def test_named_events_multiline_data_and_comments():
    decoder = SSEDecoder()
    events = decoder.feed(b': ping\n\nevent: message_start\ndata: {"x":\ndata: 1}\n\nevent: ping\n\n')
    assert events == [("message_start", b'{"x":\n1}'), ("ping", b"")]


def test_crlf_line_endings_even_when_split_between_cr_and_lf():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\r\n\r") == []
    assert decoder.feed(b"\ndata: two\r\n\r\n") == [(None, b"one"), (None, b"two")]


def test_unterminated_event_stays_pending():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: half") == []
    assert decoder.pending == b"data: half"
