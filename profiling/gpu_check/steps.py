"""The checks of ``python -m profiling.gpu_check``, one function per step, each returning JSON.

Every step runs in its own process (``profiling.gpu_check.__main__``), so the Triton mode is the
one chosen for it before triton is imported, and a hang is killed without stopping the others.
Scenes are synthetic rooms (``engine.synthetic``) with seeded random weights; the same model and
scene are rebuilt by every step from their seeds.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch

MODEL_SEED = 0
SCENE_SEED = 1
STAGES = ("backbone", "encoding", "decoding", "post_processing")
BACKBONE_FIELDS = ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features")
INTERPRETED_BACKBONE_POINTS = 50  # the Triton-form backbone in the interpreter: a crop of the scene


def _driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
        return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def environment(device: torch.device) -> dict:
    """Device and software versions."""
    import triton

    info = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cuda_runtime": torch.version.cuda,
            "device_type": device.type, "host_cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, sms=props.multi_processor_count, memory_gib=props.total_memory / 2**30,
                    compute_capability=f"{props.major}.{props.minor}", driver=_driver_version())
    else:
        from profiling.devices import device_name

        info.update(gpu=None, cpu=device_name(device))
    return info


def kernel_cases(kernel: str, device: torch.device) -> dict:
    """Every case of ``checks.<kernel>`` on ``device``: per case pass/fail, worst error, seconds."""
    from checks import cases_of

    outcomes = [case.run(device) for case in cases_of(kernel)]
    failed = [o for o in outcomes if not o.passed]
    finite_ratios = [o.worst_ratio for o in outcomes if np.isfinite(o.worst_ratio)]
    return {"passed": not failed, "cases": len(outcomes), "failed": len(failed),
            "worst_error": max((o.worst_error for o in outcomes), default=0.0),
            "worst_ratio": max(finite_ratios, default=0.0) if len(finite_ratios) == len(outcomes) else None,
            "seconds": sum(o.seconds for o in outcomes),
            "failures": [f"{o.case}: {o.detail}" for o in failed],
            "outcomes": [o.to_json() for o in outcomes]}


def _kernel_function(case):
    """The Python function of a ``kernels.compile_check`` case's kernel (its name and module)."""
    return getattr(case.kernel, "fn", case.kernel)


def kernel_resources(arch: int, first_only: bool) -> dict:
    """Registers, spills and dynamic shared memory of every specialization the launchers create
    (``kernels.compile_check``), compiled for ``sm_<arch>``, grouped by kernel module.
    ``first_only``: one specialization per module (checks the step itself, e.g. under --interpret)."""
    from kernels import compile_check

    modules: dict[str, list] = {}
    for case in compile_check.cases():
        module = _kernel_function(case).__module__.removeprefix("kernels.")
        rows = modules.setdefault(module, [])
        if first_only and rows:
            continue
        usage = compile_check.compile_case(case, arch)
        rows.append({"name": case.name, "registers": usage.registers, "spill_bytes": usage.local_bytes +
                     usage.stack_bytes, "shared_bytes": usage.shared_bytes})
    return {"arch": f"sm_{arch}", "first_only": first_only, "kernels": modules}


def _model(device: torch.device):
    from engine.session import load_model

    return load_model(None, True, MODEL_SEED).to(device)


def _scene(points: int):
    from engine.synthetic import generate_scene

    return generate_scene(points, seed=SCENE_SEED)


def _session(model, backbone, kernels: str, device: torch.device):
    from engine.pipeline import Session
    from engine.session import later_stages

    return Session(model=model, backbone=backbone, kernels=later_stages(kernels, device), device=device)


def _infer(session, scene, timer=None):
    from engine.pipeline import infer_scene
    from engine.stage_timer import StageTimer

    return infer_scene(session, scene.vertices_m, scene.colors, scene.segments, timer or StageTimer(session.device))


def _mask_iou(got: np.ndarray, want: np.ndarray) -> float | None:
    """Smallest IoU between masks of the same rank (M, N) bool; None when the counts differ."""
    if got.shape != want.shape:
        return None
    if not got.shape[0]:
        return 1.0
    inter = (got & want).sum(1)
    union = np.maximum((got | want).sum(1), 1)
    return float((inter / union).min())


def compare_kernels(got, want) -> dict:
    """``--kernels triton`` (got) against ``--kernels torch`` (want) on one scene, as the issue
    states: candidates and instances identical, thresholds within one Otsu level, labels identical,
    mask IoU reported (and 1.0 required where every threshold agrees)."""
    same_thresholds = got.thresholds.shape == want.thresholds.shape and np.array_equal(got.thresholds,
                                                                                     want.thresholds)
    level_shift = float(np.abs(got.thresholds - want.thresholds).max(initial=0)) \
        if got.thresholds.shape == want.thresholds.shape else None
    checks = {
        "candidates identical": np.array_equal(got.candidates, want.candidates),
        "instances identical": np.array_equal(got.instance_centers, want.instance_centers),
        "thresholds within one level": level_shift is not None and level_shift <= 0.01 + 1e-6,
        "labels identical": np.array_equal(got.pred_labels, want.pred_labels),
    }
    iou = _mask_iou(got.pred_masks, want.pred_masks)
    if same_thresholds:
        checks["masks identical (thresholds equal)"] = iou == 1.0
    return {"passed": all(checks.values()), "checks": checks, "candidates": int(want.candidates.size),
            "instances": int(want.instance_centers.size), "predicted": int(want.pred_labels.size),
            "threshold_shift": level_shift, "min_mask_iou": iou,
            "max_score_difference": float(np.abs(got.pred_scores - want.pred_scores).max(initial=0))
            if got.pred_scores.shape == want.pred_scores.shape else None}


def _backbone_outputs(backbone, xyz: np.ndarray, rgb: np.ndarray, device: torch.device):
    from engine.preprocess import voxelize

    vox = voxelize(xyz, rgb, device)
    with torch.no_grad():
        return backbone(vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)


def compare_backbones(got, want, rtol: float, atol: float) -> dict:
    """Point outputs of one backbone against another's: worst |difference| per field and whether
    it is within ``atol + rtol·|want|``; object points identical."""
    fields = {}
    same_object_points = torch.equal(got.object_idx.cpu(), want.object_idx.cpu())
    passed = same_object_points
    for name in BACKBONE_FIELDS:
        a, b = getattr(got, name).float().cpu(), getattr(want, name).float().cpu()
        if a.shape != b.shape:
            fields[name] = None
            passed = False
            continue
        difference = (a - b).abs()
        fields[name] = float(difference.max()) if difference.numel() else 0.0
        passed &= bool((difference <= atol + rtol * b.abs()).all())
    labels_agree = float((got.labels.cpu() == want.labels.cpu()).float().mean()) if got.labels.numel() else 1.0
    return {"passed": bool(passed), "object_points_identical": same_object_points,
            "max_difference": fields, "semantic_labels_agree": labels_agree, "rtol": rtol, "atol": atol}


def _available_backbones(model, device: torch.device, workdir: str) -> dict:
    """Backbones this machine can run besides the native one, or why not: spconv (when installed,
    on ``device``) and ONNX Runtime (when onnx and onnxruntime are installed; the graph exported
    into ``workdir``, run on ``device`` when ORT's CUDA provider is there, else on CPU)."""
    from pathlib import Path

    from engine.errors import UserError
    from engine.session import build_backbone

    found: dict = {}
    try:
        found["spconv"] = build_backbone("spconv", model, device)
    except (UserError, ImportError) as exc:
        found["spconv"] = f"unavailable: {str(exc).splitlines()[0]}"
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        found["onnxruntime"] = f"unavailable: {exc}"
        return found
    from export.onnx import export_backbone

    path = Path(workdir) / "backbone.onnx"
    export_backbone(model.state_dict(), path, weights=f"random (seed {MODEL_SEED})")
    found["onnxruntime"] = build_backbone("onnxruntime", model, device, path)
    return found


def _native(model, device: torch.device, triton: bool | None = None, precision: str = "fp32"):
    from engine.backbone.native import NativeBackbone

    return NativeBackbone.from_model(model, device, triton=triton, precision=precision)


def end_to_end(points: int, device: torch.device, interpreted: bool) -> dict:
    """Triton kernels against torch kernels on one scene (the same backbone), and every available
    backbone against the native backbone's torch form on CPU (the reference form, itself tested
    against spconv). float32 must agree within ``F32_NETWORK``; the Triton form's reduced
    precisions are measured against the same reference (reported, not judged)."""
    from checks.tolerances import F32_NETWORK
    from kernels.sparse_conv import PRECISIONS

    model, scene = _model(device), _scene(points)
    native = _native(model, device)
    want = _infer(_session(model, native, "torch", device), scene)
    got = _infer(_session(model, native, "triton", device), scene)
    result = {"points": int(scene.vertices_m.shape[0]), "backbone": native.provider,
              "kernels": compare_kernels(got, want)}

    cpu = torch.device("cpu")
    cpu_model = model if device.type == "cpu" else _model(cpu)
    xyz, rgb = scene.vertices_m, scene.colors
    if interpreted:  # the Triton-form backbone in the interpreter is slow: a crop of the scene
        xyz, rgb = xyz[:INTERPRETED_BACKBONE_POINTS], rgb[:INTERPRETED_BACKBONE_POINTS]
    reference = _backbone_outputs(_native(cpu_model, cpu, triton=False), xyz, rgb, cpu)
    backbones = {}
    for precision in (("fp32",) if interpreted else PRECISIONS):
        triton_form = _native(model, device, triton=True, precision=precision)
        compared = compare_backbones(_backbone_outputs(triton_form, xyz, rgb, device), reference, **F32_NETWORK)
        if precision != "fp32":
            compared["judged"] = False  # measured: the effect of the precision, not a correctness check
        backbones[triton_form.provider] = compared
    with tempfile.TemporaryDirectory() as workdir:
        for name, other in _available_backbones(model, device, workdir).items():
            if isinstance(other, str):
                backbones[name] = {"passed": None, "skipped": other}
                continue
            backbones[other.provider] = compare_backbones(_backbone_outputs(other, xyz, rgb, device), reference,
                                                          **F32_NETWORK)
    result["backbones"] = {"reference": "native (torch gather-GEMM-scatter, fp32) on CPU",
                           "points": int(xyz.shape[0]), "compared": backbones}
    judged = [b["passed"] for b in backbones.values() if b.get("judged", True) and b.get("passed") is not None]
    result["passed"] = result["kernels"]["passed"] and all(judged)
    return result


def _stage_stats(values: list[float], budget_ms: float, target_ms: float | None) -> dict:
    median = statistics.median(values)
    return {"ms": median, "min_ms": min(values), "max_ms": max(values), "budget_ms": budget_ms,
            "budget_ratio": median / budget_ms, "target_ms": target_ms,
            "target_ratio": median / target_ms if target_ms else None}


def _time_runs(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls after ``warmup``: CUDA events on CUDA, wall clock on CPU."""
    times = []
    for index in range(warmup + repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end)
        else:
            began = time.perf_counter()
            fn()
            elapsed = (time.perf_counter() - began) * 1e3
        if index >= warmup:
            times.append(elapsed)
    return times


def _per_kernel_ms(session, scene) -> list[dict]:
    """Device time per kernel name over one run (torch.profiler, CUDA activity), largest first;
    Triton kernels are tagged with their ``kernels`` module."""
    from torch.profiler import ProfilerActivity, profile

    from kernels import compile_check

    modules = {_kernel_function(case).__name__: _kernel_function(case).__module__ for case in compile_check.cases()}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _infer(session, scene)
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "self_cuda_time_total", 0)
        if device_us > 0:
            rows.append({"name": event.key, "module": modules.get(event.key, "torch"), "calls": event.count,
                         "ms": device_us / 1e3})
    return sorted(rows, key=lambda row: -row["ms"])


def _decoding_memory(session, scene) -> dict:
    """Peak device memory that decoding + post-processing add to what the earlier stages hold."""
    from engine.pipeline import run_backbone, run_decoding, run_encoding, run_post_processing
    from engine.postprocess import OTSU_LEVELS

    with torch.no_grad():
        backbone = run_backbone(session.backbone, scene.vertices_m, scene.colors, session.device)
        encoded = run_encoding(session.model, backbone, session.kernels)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        post = run_post_processing(run_decoding(backbone, encoded, session.kernels), backbone, scene.segments)
        torch.cuda.synchronize()
    num_points, count = backbone.vox.xyz_m.shape[0], encoded.theta.shape[0]
    return {"peak_extra_bytes": torch.cuda.max_memory_allocated() - base, "points": num_points,
            "instances": count, "linear_bytes": 4 * (num_points + count * OTSU_LEVELS),
            "output_mask_bytes": int(post.masks.numel())}


def timings(points: int, device: torch.device, repeats: int, warmup: int, interpreted: bool = False) -> dict:
    """Per stage with both kernel sets (CUDA events after warm-up) against the RTX 3090 budget and
    the H100 targets; the backbone at each precision; achieved TFLOP/s of the backbone and of
    decoding against the device's peak; per kernel device time and decoding's peak memory (CUDA).
    ``interpreted``: the torch kernels only (interpreted Triton times mean nothing, and the end-to-end
    step has run them)."""
    from engine.budget import H100_TARGET_MS, RTX3090_BUDGET_MS
    from engine.preprocess import voxelize
    from engine.stage_timer import StageTimer
    from kernels.sparse_conv import PRECISIONS
    from profiling.devices import TENSOR_FP16_TFLOPS, datasheet_entry, device_name
    from profiling.flops import backbone_flops, decoding_flops

    model, scene = _model(device), _scene(points)
    native = _native(model, device)
    result: dict = {"points": int(scene.vertices_m.shape[0]), "backbone": native.provider, "repeats": repeats,
                    "warmup": warmup, "kernels": {}}
    for kernels in ("torch",) if interpreted else ("triton", "torch"):
        session = _session(model, native, kernels, device)
        runs = []
        for index in range(warmup + repeats):
            timer = StageTimer(device)
            outcome = _infer(session, scene, timer)
            if index >= warmup:
                runs.append(timer.ms)
        result["kernels"][kernels] = {stage: _stage_stats([run[stage] for run in runs], RTX3090_BUDGET_MS[stage],
                                                          H100_TARGET_MS.get(stage)) for stage in STAGES}
        result["kernels"][kernels]["total_ms"] = statistics.median(sum(run[s] for s in STAGES) for run in runs)
    result.update(voxels=outcome.num_voxels, instances=int(outcome.instance_centers.size))

    vox = voxelize(scene.vertices_m, scene.colors, device)
    args = (vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    flops = backbone_flops(native, *args)["total"]
    name = device_name(device)
    fp32_peak = (datasheet_entry(name) or (None,))[0] if device.type == "cuda" else None
    fp16_peak = datasheet_entry(name, TENSOR_FP16_TFLOPS) if device.type == "cuda" else None
    precisions = {}
    for precision in (PRECISIONS if device.type == "cuda" else ("fp32",)):
        backbone = native if precision == "fp32" else _native(model, device, precision=precision)
        with torch.no_grad():
            ms = statistics.median(_time_runs(lambda b=backbone: b(*args), device, warmup, repeats))
        tflops = flops / ms / 1e9
        peak = fp32_peak if precision == "fp32" else fp16_peak if precision in ("fp16", "bf16") else None
        precisions[precision] = {"ms": ms, "tflops": tflops, "peak_tflops": peak,
                                 "percent_of_peak": 100 * tflops / peak if peak else None,
                                 "target_ms": H100_TARGET_MS["backbone"] if precision == "fp16" else None}
    result["backbone_gflop"] = flops / 1e9
    result["backbone_precisions"] = precisions
    decode_ms = result["kernels"]["torch" if interpreted else "triton"]["decoding"]["ms"]
    decode_flops = decoding_flops(scene.vertices_m.shape[0], result["instances"])
    result["decoding"] = {"gflop": decode_flops / 1e9, "tflops": decode_flops / decode_ms / 1e9,
                          "peak_tflops": fp32_peak,
                          "percent_of_peak": 100 * decode_flops / decode_ms / 1e9 / fp32_peak if fp32_peak else None}
    result["fp32_peak_source"] = "datasheet" if fp32_peak else None
    if device.type == "cuda":
        triton_session = _session(model, native, "triton", device)
        result["per_kernel"] = _per_kernel_ms(triton_session, scene)
        result["memory"] = _decoding_memory(triton_session, scene)
    else:
        result["per_kernel"] = None  # device kernel times need CUDA
        result["memory"] = None
    return result
