"""`make soak`: the [S] scenarios of RELIABILITY.md against a real gateway process (tests/soak/README in docs/operations.md)."""
