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

# The project's targets on an H100/H200 at 150k points (issues 13 and 16): the backbone in float16.
H100_TARGET_MS: dict[str, float] = {
    "backbone": 6.0,
    "encoding": 2.0,
    "decoding": 0.5,
    "post_processing": 1.0,
}
