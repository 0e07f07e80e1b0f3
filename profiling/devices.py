"""Device throughput relative to the RTX 3090 the paper's budget was measured on.

The device-normalized budget of a stage is ``budget_ms * 3090_tflops / device_tflops``: a device
with half the 3090's float32 throughput gets twice the time. Float32 peak is one number for
stages that are partly memory-bound; memory bandwidth is reported beside it for reading the
verdicts, not used in them.

Datasheet figures (NVIDIA product datasheets; float32 non-tensor peak at boost clock, memory
bandwidth). A GPU whose name matches none of these, and any CPU, is measured instead: the float32
rate of a 2048^3 matmul on the device, which is below its peak, so its verdict is conservative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# name fragment -> (float32 TFLOP/s, memory GB/s); longer fragments are matched first.
DATASHEET: dict[str, tuple[float, float]] = {
    "RTX 3090": (35.6, 936.0),
    "RTX 4090": (82.6, 1008.0),
    "H100 SXM": (67.0, 3350.0),
    "H100 PCIe": (51.0, 2000.0),
    "H100 NVL": (60.0, 3900.0),
    "H100": (67.0, 3350.0),
    "H200": (67.0, 4800.0),
    "A100-SXM4-80GB": (19.5, 2039.0),
    "A100": (19.5, 1555.0),
    "L40S": (91.6, 864.0),
    "L4": (30.3, 300.0),
    "A10": (31.2, 600.0),
    "T4": (8.1, 320.0),
    "V100": (15.7, 900.0),
}
RTX3090 = "RTX 3090"
# name fragment -> dense float16 tensor-core TFLOP/s with float32 accumulation (the datasheets'
# figures without sparsity), the peak of the backbone's fp16 precision, which accumulates in float32.
TENSOR_FP16_TFLOPS: dict[str, float] = {
    "RTX 3090": 71.0,
    "RTX 4090": 165.2,
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "T4": 65.0,
    "V100": 125.0,
}


@dataclass(frozen=True)
class DeviceThroughput:
    name: str
    fp32_tflops: float
    memory_gbps: float | None
    source: str  # "datasheet" or "measured (2048^3 float32 matmul)"
    device_type: str = "cuda"  # "cpu": no device-normalized verdict (profiling.report)

    @property
    def speed_vs_rtx3090(self) -> float:
        return self.fp32_tflops / DATASHEET[RTX3090][0]

    def normalized_budget_ms(self, budget_ms: float) -> float:
        return budget_ms / self.speed_vs_rtx3090


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU {model} ({torch.get_num_threads()} threads)"


def datasheet_entry(name: str, table: dict | None = None):
    """The row of ``table`` (default ``DATASHEET``) whose name fragment ``name`` contains, longest
    fragments first; None when none matches."""
    table = DATASHEET if table is None else table
    for fragment in sorted(table, key=len, reverse=True):
        if fragment.lower() in name.lower():
            return table[fragment]
    return None


def measure_fp32_tflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Median float32 matmul rate on ``device`` in TFLOP/s."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    times = sorted(times[1:])
    return 2 * size**3 / times[len(times) // 2] / 1e12


def device_throughput(device: torch.device) -> DeviceThroughput:
    name = device_name(device)
    entry = datasheet_entry(name) if device.type == "cuda" else None
    if entry is not None:
        return DeviceThroughput(name, entry[0], entry[1], "datasheet")
    return DeviceThroughput(name, measure_fp32_tflops(device), None, "measured (2048^3 float32 matmul)",
                            device.type)
