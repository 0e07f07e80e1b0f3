"""The paper's per-stage RTX 3090 budget (supplementary Table S3), in milliseconds (SPEC §0)."""

STAGES: tuple[str, ...] = ("backbone", "encoding", "decoding", "post_processing")
RTX3090_BUDGET_MS: dict[str, float] = {
    "backbone": 160.6,
    "encoding": 129.3,
    "decoding": 16.3,
    "post_processing": 45.9,
}
# The table's total: 5.4 ms more than the four stages (time the table leaves outside them).
RTX3090_TOTAL_MS = 357.5
