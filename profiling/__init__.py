"""Stage timing and the RTX 3090 budget (SPEC §0)."""
