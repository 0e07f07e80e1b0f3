"""Aggregating repeated runs into a stage report: medians, spread, budget ratios, verdicts, JSON.

Pure arithmetic on recorded milliseconds (no torch), so it is tested exactly.

The device-normalized verdict (the budget scaled by the device's float32 throughput relative to the
RTX 3090) is given for GPUs only: on a CPU the throughput is a matmul rate measured at that moment
(0.047 TFLOP/s under load was seen), which moves with other processes and says little about sparse
convolutions, so the scaled budget made every stage "within". On CPUs the JSON's ``normalized_*``
fields are null and the table leaves those columns out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from engine.budget import RTX3090_BUDGET_MS, RTX3090_TOTAL_MS, STAGES
from profiling.devices import DeviceThroughput

SCHEMA_VERSION = 2  # 2: "backend" split into "backbone" and "kernels"


@dataclass
class StageStats:
    ms: float  # median over runs
    min_ms: float
    max_ms: float
    budget_ms: float
    normalized_budget_ms: float

    @property
    def ratio(self) -> float:
        return self.ms / self.budget_ms

    @property
    def normalized_ratio(self) -> float:
        return self.ms / self.normalized_budget_ms

    @staticmethod
    def verdict(ratio: float) -> str:
        return "within" if ratio <= 1.0 else "over"


def summarize(runs: list[dict[str, float]], budget_ms: float, throughput: DeviceThroughput,
              stage: str) -> StageStats:
    values = [run[stage] for run in runs]
    return StageStats(ms=statistics.median(values), min_ms=min(values), max_ms=max(values),
                      budget_ms=budget_ms, normalized_budget_ms=throughput.normalized_budget_ms(budget_ms))


@dataclass
class ProfileReport:
    scene: dict  # name, points, voxels, candidates, instances
    backbone: str  # what ran the backbone (the Session's backbone provider)
    kernels: str  # torch or triton
    throughput: DeviceThroughput
    runs: list[dict[str, float]]  # stage -> ms, one dict per timed run
    io_ms: dict[str, float] = field(default_factory=dict)  # read, superpoints, write (outside the budget)
    peak_memory_mb: dict[str, float | None] = field(default_factory=dict)  # host, device
    later_stages: str = ""  # how they ran, e.g. "PyTorch + C kernels" (engine.session.kernels_description)

    def stages(self) -> dict[str, StageStats]:
        return {s: summarize(self.runs, RTX3090_BUDGET_MS[s], self.throughput, s) for s in STAGES}

    @property
    def normalized(self) -> bool:
        """Whether the device-normalized verdict is given (GPUs only; module docstring)."""
        return self.throughput.device_type != "cpu"

    def total(self) -> StageStats:
        totals = [{"total": sum(run[s] for s in STAGES)} for run in self.runs]
        return summarize(totals, RTX3090_TOTAL_MS, self.throughput, "total")

    def to_json(self) -> dict:
        normalized = self.normalized

        def entry(stats: StageStats) -> dict:
            return {"ms": stats.ms, "min_ms": stats.min_ms, "max_ms": stats.max_ms,
                    "budget_ms": stats.budget_ms, "ratio": stats.ratio,
                    "verdict": StageStats.verdict(stats.ratio),
                    "normalized_budget_ms": stats.normalized_budget_ms if normalized else None,
                    "normalized_ratio": stats.normalized_ratio if normalized else None,
                    "normalized_verdict": StageStats.verdict(stats.normalized_ratio) if normalized else None}

        return {
            "schema_version": SCHEMA_VERSION,
            "scene": self.scene,
            "backbone": self.backbone,
            "kernels": self.kernels,
            "later_stages": self.later_stages,
            "device": {"name": self.throughput.name, "fp32_tflops": self.throughput.fp32_tflops,
                       "memory_gbps": self.throughput.memory_gbps, "throughput_source": self.throughput.source,
                       "speed_vs_rtx3090": self.throughput.speed_vs_rtx3090,
                       "type": self.throughput.device_type},
            "repeats": len(self.runs),
            "stages": {name: entry(stats) for name, stats in self.stages().items()},
            "total": entry(self.total()),
            "io_ms": self.io_ms,
            "peak_memory_mb": self.peak_memory_mb,
        }
