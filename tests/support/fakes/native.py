"""The fakes of the non-OpenAI wire formats by provider kind: (run_fake_<kind>, the key it accepts).

For tests that run one scenario against every native adapter through the gateway; Ollama takes no
key (""). Each runner starts its fake on 127.0.0.1 and yields it (`.base_url`, `.requests`).
"""

from __future__ import annotations

from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.gemini import DEFAULT_KEY as GEMINI_KEY, run_fake_gemini
from tests.support.fakes.ollama import run_fake_ollama

NATIVE_FAKES = {"anthropic": (run_fake_anthropic, FAKE_ANTHROPIC_KEY), "gemini": (run_fake_gemini, GEMINI_KEY),
                "ollama": (run_fake_ollama, "")}
