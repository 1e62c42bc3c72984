"""The SSE parser against the framing real servers send, split at every possible byte."""

from __future__ import annotations

import asyncio

import pytest

from nbchat.core.sse import SSEParser, aiter_sse, iter_sse

# llama.cpp server style: a comment ping, CRLF line ends, OpenAI chunks, [DONE]
LLAMA_WIRE = (
    b": ping - 2024-01-01 00:00:00\r\n\r\n"
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\r\n\r\n'
    b'data: {"choices":[{"delta":{"content":" caf\xc3\xa9"}}]}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)
# Replicate style: named events, a token with a newline as two data lines
REPLICATE_WIRE = (
    b"event: output\nid: 1\ndata: line one\ndata: line two\n\n"
    b"event: output\ndata:  leading space kept\n\n"
    b"event: done\ndata: {}\n\n"
)


def test_comments_crlf_and_utf8():
    assert list(iter_sse([LLAMA_WIRE])) == [
        ("message", '{"choices":[{"delta":{"content":"Hi"}}]}'),
        ("message", '{"choices":[{"delta":{"content":" café"}}]}'),
        ("message", "[DONE]"),
    ]


def test_event_names_and_multiline_data():
    parser = SSEParser()
    records = parser.feed(REPLICATE_WIRE)
    assert records == [
        ("output", "line one\nline two"),
        ("output", " leading space kept"),
        ("done", "{}"),
    ]
    assert parser.last_id == "1"


@pytest.mark.parametrize("wire", [LLAMA_WIRE, REPLICATE_WIRE], ids=["crlf", "events"])
def test_every_split_point_gives_the_same_records(wire):
    whole = list(iter_sse([wire]))
    for i in range(len(wire) + 1):
        assert list(iter_sse([wire[:i], wire[i:]])) == whole, i
    # and one byte at a time (splits CRLF pairs and UTF-8 sequences)
    assert list(iter_sse([wire[i : i + 1] for i in range(len(wire))])) == whole


def test_lone_cr_line_endings_and_event_reset():
    wire = b"event: a\rdata: 1\r\rdata: 2\r\r"
    assert list(iter_sse([wire])) == [("a", "1"), ("message", "2")]


def test_record_without_final_blank_line_is_flushed_at_end():
    parser = SSEParser()
    assert parser.feed(b'data: {"x": 1}') == []
    assert parser.pending
    assert parser.flush() == [("message", '{"x": 1}')]
    assert not parser.pending


def test_comment_only_and_unknown_fields_yield_nothing():
    assert list(iter_sse([b": keepalive\n\nfoo: bar\n\nretry: 3000\n\n"])) == []
    parser = SSEParser()
    parser.feed(b"retry: 3000\n\n")
    assert parser.retry == 3000


def test_data_field_without_colon_is_an_empty_line():
    assert list(iter_sse([b"data\ndata: x\n\n"])) == [("message", "\nx")]


def test_async_iteration():
    async def chunks():
        for i in range(0, len(REPLICATE_WIRE), 7):
            yield REPLICATE_WIRE[i : i + 7]

    async def collect():
        return [r async for r in aiter_sse(chunks())]

    assert asyncio.run(collect()) == list(iter_sse([REPLICATE_WIRE]))
