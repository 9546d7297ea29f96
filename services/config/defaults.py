"""The embedded defaults: tiers of seeds 000 and 003, and the demo provider."""

from __future__ import annotations

from services.config.schema import ProviderConfig, ProviderKeyConfig, TierConfig

# Seed 000 (requests/min, requests/day, tokens/day) and seed 003 (requests/min, tokens/month).
DEFAULT_TIERS: tuple[TierConfig, ...] = (
    TierConfig("basic", rpm=60, rpd=1_000, tpd=100_000, description="Seed 000 basic"),
    TierConfig("pro", rpm=300, rpd=10_000, tpd=1_000_000, description="Seed 000 pro"),
    TierConfig("enterprise", rpm=1_000, rpd=100_000, tpd=10_000_000, description="Seed 000 enterprise (seed 003: unlimited monthly tokens)",
               load_models=True),
    TierConfig("explorer", rpm=20, tpm_month=100_000, description="Seed 003 explorer (free)", price_usd_month=0.0),
    TierConfig("startup", rpm=60, tpm_month=1_000_000, description="Seed 003 startup", price_usd_month=29.0),
    TierConfig("growth", rpm=200, tpm_month=10_000_000, description="Seed 003 growth", price_usd_month=99.0),
    TierConfig("unlimited", description="No limits (static keys without auth_key_tier)"),
)

DEMO_PROVIDER = ProviderConfig(
    name="demo",
    kind="demo",
    base_url="",
    keys=(ProviderKeyConfig(id="demo-k1"),),
    models=("demo", "tollgate-demo"),
    default_model="demo",
    priority=1000,
    source="built-in",
)
