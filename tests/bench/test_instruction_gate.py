"""The instruction gate (bench/gate.py): instructions per chat and per stream request of the gateway
process, counted under valgrind, must stay within 10 % of bench/instruction_budget.json.

A count, not a timing: it does not depend on how busy the machine is, so it cannot drift with it.
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
    print({k: round(v) for k, v in measured.items()}, "budget", {k: budget[k] for k in measured})
    assert set(measured) == {"chat", "stream"} and all(v > 100_000 for v in measured.values()), measured
    over = verdict(measured, budget)
    assert not over, "; ".join(over) + " — cut it, or update the budget on purpose (python bench/gate.py --update)"
