"""The instruction gate (bench/gate.py): instructions per chat and per stream request of the gateway
process, counted under valgrind, must stay within 10 % of bench/instruction_budget.json.

A count, not a timing: it does not depend on how busy the machine is, so it cannot drift with it.
What the idle event loop does meanwhile (timers) is measured in a window with no request and
subtracted (rate × each round's wall time): a request takes longer on a busy machine, and that
share used to grow with it (issue 20 point 5).
The budget changes only on purpose: `python bench/gate.py --update`, committed with the numbers in
the commit message. Without valgrind the test fails under CI=true (`make test` installs it) and is
skipped otherwise.
"""

from __future__ import annotations

import json
import os

import pytest

from bench.gate import BUDGET, measure, valgrind_missing, verdict


@pytest.mark.timeout(300)
async def test_instructions_per_request_within_budget(fake_openai):
    missing = valgrind_missing()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with open(BUDGET) as f:
        budget = json.load(f)
    measured = await measure(fake_openai.base_url)
    print({k: round(v) for k, v in measured.items()}, "budget", {k: budget[k] for k in ("chat", "stream")})
    assert set(measured) == {"chat", "stream", "chat_raw", "stream_raw", "idle_per_s"}, measured
    assert measured["chat"] > 100_000 and measured["stream"] > 100_000, measured
    # What is subtracted is the idle event loop's timers, a few % of a request at most (with the
    # store's pollers woken only by a change, ~70k a second; main at 29b04fe read ~570k).
    assert 0 <= measured["idle_per_s"] < 300_000, measured
    over = verdict(measured, budget)
    assert not over, "; ".join(over) + " — cut it, or update the budget on purpose (python bench/gate.py --update)"
