"""Provider kinds and routing strategy names as data: what a config may name.

A kind: its wire format, default base URL, key variable, what it cannot do. Adding one more
OpenAI-compatible provider is one row here, not a module (STYLE.md). The strategies themselves
are routing/strategies/'s; config/ only knows their names, so it imports nothing above it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    wire: str  # which adapter speaks it: openai | anthropic | gemini | ollama | demo
    base_url: str  # as the provider documents it (seed 001's table)
    key_env: str = ""  # the seeds' variable for its key
    needs_key: bool = True
    unsupported: tuple[str, ...] = ()  # features it lacks: embeddings, image_url, tools, json_schema


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        Kind("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", unsupported=("embeddings",)),
        Kind("gemini", "gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY"),
        Kind("ollama", "ollama", "http://localhost:11434", "", needs_key=False, unsupported=("image_url",)),
        Kind("openrouter", "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        Kind("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        Kind("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY", unsupported=("embeddings",)),
        Kind("together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        Kind("fireworks", "openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
        Kind("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", unsupported=("embeddings", "image_url")),
        Kind("cerebras", "openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", unsupported=("embeddings", "image_url")),
        Kind("deepinfra", "openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_TOKEN"),
        Kind("openai_compatible", "openai", "", "", needs_key=False),
        Kind("demo", "demo", "", "", needs_key=False, unsupported=("image_url",)),
    )
}

# Seed 002 spells a few kinds its own way in ROUTER_SERVICES.backend_type.
ALIASES = {"custom": "openai_compatible", "openai-compatible": "openai_compatible", "google": "gemini", "together_ai": "together"}


def resolve(name: str) -> Kind | None:
    key = name.strip().lower()
    return KINDS.get(ALIASES.get(key, key))


# Routing strategies by their seed spelling; routing/strategies/ makes one of each.
STRATEGY_NAMES: tuple[str, ...] = (
    "priority", "exhaust-first", "round-robin", "weighted", "least-latency", "cost", "balanced",
)
