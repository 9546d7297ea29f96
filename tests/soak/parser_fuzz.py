"""RELIABILITY E11's parser half: each parser fed arbitrary input for a time budget; only its declared
errors may come out.

  python -m tests.soak.parser_fuzz sse 60        # one parser for 60 s; exit 0 = nothing else came out

Engine: atheris (libFuzzer, coverage-guided, the parser's modules instrumented) when it imports,
else hypothesis in batches until the budget is spent; the first line printed names the engine.
Parsers: the upstream SSE parser (any bytes in any split, then close), the E2 JSON bound, the
Retry-After parser, and the OpenAI and Anthropic request codecs (raw body -> ChatInput;
BridgeError is their declared refusal).
"""

from __future__ import annotations

import sys
import time

MODULES = {"sse": "services.providers.sse", "json_bound": "tollgate.json_bound",
           "retry_after": "services.providers.retry_after", "openai_codec": "gateway_http.openai.codec",
           "anthropic_codec": "gateway_http.anthropic.codec"}
TARGETS = tuple(MODULES)


def _check(target: str, data: bytes) -> None:
    if target == "sse":
        from services.providers.sse import SSEParser

        p = SSEParser(max_event_bytes=64 * 1024)
        cut = data[0] % 7 + 1 if data else 1
        for i in range(0, len(data), cut):
            for ev in p.feed(data[i:i + cut]):
                assert isinstance(ev.data, bytes)
        p.close()
    elif target == "json_bound":
        from tollgate.json_bound import too_complex

        r = too_complex(data)
        assert r is None or isinstance(r, str)
    elif target == "retry_after":
        from services.providers.retry_after import parse_retry_after

        text = data.decode("utf-8", "replace")
        name = ("retry-after", "Retry-After-Ms", "x")[data[0] % 3] if data else "retry-after"
        r = parse_retry_after({name: text}, 1_700_000_000.0)
        assert r is None or 0.0 <= r <= 86400.0, r
    else:
        from gateway_http.errors import BridgeError

        if target == "openai_codec":
            from gateway_http.openai import codec
        else:
            from gateway_http.anthropic import codec
        try:
            codec.chat_input(codec.load_json(data))
        except BridgeError as e:
            assert 400 <= e.status < 500, e.status


def _atheris(target: str, seconds: int) -> int:
    import atheris

    import importlib

    # Only the parser's own module is instrumented: instrumenting what it imports (aiohttp through the
    # bridge's errors module) costs a minute of start-up and guides nothing about the parser.
    module = MODULES[target]
    with atheris.instrument_imports(include=[module]):
        importlib.import_module(module)

    print(f"engine: atheris {target} {seconds}s", flush=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-print_final_stats=1", "-rss_limit_mb=1024",
                   "-max_len=4096", "-timeout=10"], lambda data: _check(target, data))
    atheris.Fuzz()  # exits the process: 0 when the time ran out with no finding
    return 0


def _hypothesis(target: str, seconds: int) -> int:
    from hypothesis import HealthCheck, given, settings, strategies as st

    print(f"engine: hypothesis {target} {seconds}s", flush=True)
    end = time.monotonic() + seconds
    runs = 0

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=4096) | st.text(max_size=2048).map(lambda s: s.encode("utf-8", "surrogatepass")))
    def fuzz(data: bytes) -> None:
        nonlocal runs
        runs += 1
        _check(target, data)

    while time.monotonic() < end:
        fuzz()
    print(f"stat::number_of_executed_units: {runs}", flush=True)
    return 0


def main() -> int:
    target, seconds = sys.argv[1], int(float(sys.argv[2]))
    if target not in TARGETS:
        print(f"unknown target {target}; one of {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    try:
        import atheris  # noqa: F401
    except ImportError:
        return _hypothesis(target, seconds)
    return _atheris(target, seconds)


if __name__ == "__main__":
    sys.exit(main())
