"""services/metering/usage_scan.py: the provider's usage found in a relayed body, piece by piece."""

from __future__ import annotations

import pytest

from services.metering.usage_scan import UsageMeter


def test_usage_meter_reads_each_provider_shape():
    cases = [
        (True, [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b'data: {"choices":[],"usage":{"prompt_tokens":4,',
                b'"completion_tokens":2}}\n\ndata: [DONE]\n\n'], (4, 2)),
        (True, [b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}\n\n',
                b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":5}}\n\n'], (9, 5)),
        (True, [b'data: {"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}\r\n\r\n',
                b'data: {"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"thoughtsTokenCount":2}}\r\n\r\n'],
         (3, 6)),
        (False, [b'{"id":"x","usage":{"prompt_tokens":', b'11,"completion_tokens":12},"note":"usage"}'], (11, 12)),
        (False, [b'{"content":[{"text":"a \\"usage\\": {"}],"usage":{"input_tokens":1,"output_tokens":2}}'], (1, 2)),
        (False, [b'{"error":{"message":"bad"}}'], None),
    ]
    for sse, pieces, want in cases:
        meter = UsageMeter(sse)
        for p in pieces:
            meter.feed(p)
        meter.close()
        assert meter.reported() == want, pieces
    cut = UsageMeter(True)
    cut.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
             + b'event: content_block_delta\ndata: {"delta":{"type":"text_delta","text":"hello there friend"}}\n\n')
    u = cut.usage(50, complete=False, ok=True)
    assert (u.prompt_tokens, u.estimated) == (9, True) and u.completion_tokens >= 1


def test_usage_meter_refuses_an_oversized_sse_event():
    meter = UsageMeter(True)
    meter.feed(b"data: {}\n\n")
    with pytest.raises(ValueError):  # Exchange.body() turns this into UPSTREAM_STREAM_BROKEN (E10)
        for _ in range(5):
            meter.feed(b"data: " + b"x" * (1024 * 1024))
    json_meter = UsageMeter(False)  # a long JSON body keeps only its tail
    for _ in range(40):
        json_meter.feed(b'{"text": "' + b"y" * 100_000 + b'"},')
    json_meter.feed(b'"usage": {"prompt_tokens": 2, "completion_tokens": 9}}')
    assert json_meter.reported() == (2, 9)
