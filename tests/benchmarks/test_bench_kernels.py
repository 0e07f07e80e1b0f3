"""Triton kernels against their torch references (``pytest --benchmark-only tests/benchmarks``).

Each group has exactly one reference variant and one kernel variant on the same inputs and device
(CUDA when available, else CPU); parametrized inputs name their group in the test
(``benchmark.group``): mining at 150k and 1M points, the greedy merge per score structure and P.
Kernel variants need compiled Triton on a CUDA device and are skipped otherwise: on CPU they could
only run in the interpreter, which measures numpy, not the kernel. Run benchmarks in their own
pytest invocation: ``tests/kernels`` sets TRITON_INTERPRET=1.

``kernels`` is imported inside the tests, never at collection: importing it would import triton
before ``tests/kernels/conftest.py`` selects the interpreter for the kernel tests of the same run.
Each kernel variant records its error against the reference in ``extra_info``.
"""

from __future__ import annotations

import pytest
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POINTS = [20_000, 150_000]
INSTANCES = 100


def _synchronized(fn):
    """fn followed by a device sync, so wall-clock rounds time the work, not the launch."""
    def run(*args):
        result = fn(*args)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return result
    return run


def _skip_unless_compiled() -> None:
    from kernels._triton import INTERPRETER, triton_available

    if DEVICE.type != "cuda" or INTERPRETER or not triton_available(DEVICE):
        pytest.skip("Triton kernels are benchmarked compiled on a CUDA device only "
                    f"(device {DEVICE}, TRITON_INTERPRET={'1' if INTERPRETER else '0'})")


@pytest.fixture(scope="module", params=POINTS, ids=lambda n: f"{n // 1000}k")
def decode_inputs(request) -> tuple[torch.Tensor, ...]:
    """theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3) float32 on DEVICE."""
    g = torch.Generator().manual_seed(request.param)
    num_points = request.param
    inputs = (torch.randn(INSTANCES, 337, generator=g) * 0.5, torch.randn(num_points, 16, generator=g),
              torch.randn(num_points, 3, generator=g) * 3, torch.randn(INSTANCES, 3, generator=g) * 3)
    return tuple(t.to(DEVICE) for t in inputs)


@pytest.fixture(scope="module")
def histograms() -> torch.Tensor:
    """(I, 100) int64 on DEVICE: 150 instances with about half their levels populated."""
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 5000, (150, 100), generator=g) * (torch.rand(150, 100, generator=g) < 0.5)
    return counts.to(DEVICE)


@pytest.mark.benchmark(group="kernel-decode")
def test_decode_reference(benchmark, decode_inputs):
    from checks.decode import decode_histograms_reference

    benchmark.extra_info.update(instances=INSTANCES, device=str(DEVICE))
    benchmark.pedantic(_synchronized(decode_histograms_reference), args=decode_inputs, rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="kernel-decode")
def test_decode_kernel(benchmark, decode_inputs):
    _skip_unless_compiled()
    from checks.decode import decode_histograms_reference
    from kernels.decode import decode_histograms

    hist = benchmark.pedantic(_synchronized(decode_histograms), args=decode_inputs, rounds=5, warmup_rounds=1)
    moved = (hist - decode_histograms_reference(*decode_inputs)).abs().sum().item() // 2
    benchmark.extra_info.update(instances=INSTANCES, device=str(DEVICE), points_moved_vs_reference=moved)


@pytest.mark.benchmark(group="kernel-otsu")
def test_otsu_reference(benchmark, histograms):
    from kernels.otsu import otsu_thresholds_reference

    benchmark.extra_info["device"] = str(DEVICE)
    benchmark.pedantic(_synchronized(otsu_thresholds_reference), args=(histograms,), rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="kernel-otsu")
def test_otsu_kernel(benchmark, histograms):
    _skip_unless_compiled()
    from kernels.otsu import otsu_thresholds, otsu_thresholds_reference

    thresholds = benchmark.pedantic(_synchronized(otsu_thresholds), args=(histograms,), rounds=20, warmup_rounds=2)
    mismatches = int((thresholds != otsu_thresholds_reference(histograms)).sum())
    benchmark.extra_info.update(device=str(DEVICE), thresholds_differing_from_reference=mismatches)


@pytest.fixture(scope="module")
def assign_inputs(decode_inputs) -> tuple[torch.Tensor, ...]:
    """decode inputs + thresholds (I,) t/100 and cover (I,) in (0, 1] on DEVICE."""
    g = torch.Generator().manual_seed(1)
    thresholds = torch.randint(20, 80, (INSTANCES,), generator=g).float() / 100
    cover = torch.rand(INSTANCES, generator=g) * 0.5 + 0.5
    return (*decode_inputs, thresholds.to(DEVICE), cover.to(DEVICE))


def _reference_passes(theta, features, xyz_m, centres_m, thresholds, cover):
    """The reference's two assignment passes over stored masks, decoding included (it stores them)."""
    from engine.decoding import decode_masks
    from engine.postprocess import StoredMasks

    masks = StoredMasks(decode_masks(theta, features, xyz_m, centres_m))
    masks.threshold_pass(thresholds)
    return masks.rescale_pass(cover, torch.sqrt(thresholds * cover))


def _kernel_passes(theta, features, xyz_m, centres_m, thresholds, cover):
    """Both passes recomputing the masks (the Triton backend decodes only histograms beforehand)."""
    from kernels.assign import best_instances

    best_instances(theta, features, xyz_m, centres_m, thresholds, column_sums=True)
    return best_instances(theta, features, xyz_m, centres_m, thresholds, cover)


@pytest.mark.benchmark(group="kernel-assign")
def test_assign_reference(benchmark, assign_inputs):
    benchmark.extra_info.update(instances=INSTANCES, device=str(DEVICE), includes="decode_masks + 2 passes")
    benchmark.pedantic(_synchronized(_reference_passes), args=assign_inputs, rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="kernel-assign")
def test_assign_kernel(benchmark, assign_inputs):
    _skip_unless_compiled()
    best, _, _ = benchmark.pedantic(_synchronized(_kernel_passes), args=assign_inputs, rounds=5, warmup_rounds=1)
    _, ref_best = _reference_passes(*assign_inputs)
    benchmark.extra_info.update(instances=INSTANCES, device=str(DEVICE), includes="2 passes recomputing masks",
                                max_best_error=float((best - ref_best).abs().max()))


@pytest.fixture(scope="module")
def assigned_values() -> tuple[torch.Tensor, torch.Tensor]:
    """values (150k,) float32 and an assignment to 150 instances (a tenth unassigned) on DEVICE."""
    g = torch.Generator().manual_seed(2)
    assignment = torch.randint(-15, 150, (150_000,), generator=g).clamp(min=-1)
    return torch.rand(150_000, generator=g).to(DEVICE), assignment.to(DEVICE)


@pytest.mark.benchmark(group="kernel-instance-sums")
def test_instance_sums_reference(benchmark, assigned_values):
    from engine.postprocess import instance_sums

    benchmark.pedantic(_synchronized(instance_sums), args=(*assigned_values, 150), rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="kernel-instance-sums")
def test_instance_sums_kernel(benchmark, assigned_values):
    _skip_unless_compiled()
    from engine import postprocess
    from kernels.assign import instance_sums

    sums = benchmark.pedantic(_synchronized(instance_sums), args=(*assigned_values, 150), rounds=20, warmup_rounds=2)
    benchmark.extra_info["max_relative_error"] = float(
        ((sums - postprocess.instance_sums(*assigned_values, 150)).abs() / sums.abs().clamp(min=1e-6)).max())


@pytest.fixture(scope="module")
def encoding_inputs():
    """150 candidates over 20k object points (fg lists up to 2000, bg up to 2000), their
    descriptors, a random-weight model and merge scores, on DEVICE."""
    import numpy as np

    from engine.checkpoint import randomize_weights
    from engine.encoding import Candidates
    from engine.model import build_model

    rng = np.random.default_rng(3)
    num_points, count = 20_000, 150
    sizes = rng.integers(100, 2001, count)
    bg_sizes = rng.integers(0, 2001, count)
    fg = np.concatenate([np.sort(rng.choice(num_points, s, replace=False)) for s in sizes])
    bg = np.concatenate([np.sort(rng.choice(num_points, s, replace=False)) for s in bg_sizes])
    cands = Candidates(rng.choice(num_points, count, replace=False).astype(np.int64), sizes.astype(np.int64),
                       np.repeat(np.arange(count), sizes).astype(np.int64), fg.astype(np.int64),
                       np.repeat(np.arange(count), bg_sizes).astype(np.int64), bg.astype(np.int64))
    g = torch.Generator().manual_seed(3)
    arrays = tuple(t.to(DEVICE) for t in (torch.randn(num_points, 16, generator=g),
                                          torch.rand(num_points, 3, generator=g) * 5,
                                          torch.randn(num_points, 3, generator=g) * 0.1))
    model = build_model()
    randomize_weights(model, seed=0)
    model = model.to(DEVICE).eval()
    descriptors = torch.randn(count, 35, generator=g).to(DEVICE)
    return cands, arrays, model, descriptors


@pytest.mark.benchmark(group="kernel-describe")
def test_describe_reference(benchmark, encoding_inputs):
    from engine.encoding import describe_candidates

    cands, arrays, _, _ = encoding_inputs
    benchmark.pedantic(_synchronized(describe_candidates), args=(cands, *arrays), rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="kernel-describe")
def test_describe_kernel(benchmark, encoding_inputs):
    _skip_unless_compiled()
    from checks.candidates import padded_from_host
    from engine.encoding import describe_candidates as reference
    from kernels.encode import describe_candidates

    cands, arrays, _, _ = encoding_inputs
    rows = padded_from_host(cands, DEVICE)
    got = benchmark.pedantic(_synchronized(describe_candidates), args=(rows, *arrays), rounds=20, warmup_rounds=2)
    benchmark.extra_info["max_error"] = float((got - reference(cands, *arrays)).abs().max())


@pytest.mark.benchmark(group="kernel-merge-scores")
def test_merge_scores_reference(benchmark, encoding_inputs):
    from engine.encoding import merge_probabilities

    _, _, model, descriptors = encoding_inputs
    with torch.no_grad():
        benchmark.pedantic(_synchronized(merge_probabilities), args=(model, descriptors), rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="kernel-merge-scores")
def test_merge_scores_kernel(benchmark, encoding_inputs):
    _skip_unless_compiled()
    from engine.encoding import merge_probabilities as reference
    from kernels.encode import merge_probabilities

    _, _, model, descriptors = encoding_inputs
    with torch.no_grad():
        got = benchmark.pedantic(_synchronized(merge_probabilities), args=(model, descriptors), rounds=20,
                                 warmup_rounds=2)
        benchmark.extra_info["max_error"] = float((got - reference(model, descriptors)).abs().max())


MERGE_MATRICES = [("random", 150), ("chains", 150), ("chains", 256)]  # (structure, P)


@pytest.fixture(scope="module", params=MERGE_MATRICES, ids=lambda m: f"{m[0]}-P{m[1]}")
def merge_scores(request) -> tuple[str, torch.Tensor]:
    """(group name, (P, P) float32 symmetric scores on DEVICE). P = 150 is the candidate cap K, so
    the merge sees it at 150k and 1M points alike (its cost depends on P only); 256 is the kernel's
    largest P. "random": ~1.2 pairs per candidate above 0.5; "chains": 3 long chains with tied and
    exact-0.5 scores (``checks.encode.chain_scores``), the most propagation rounds."""
    structure, count = request.param
    if structure == "chains":
        from checks.encode import chain_scores

        scores = torch.from_numpy(chain_scores(count, seed=1, symmetric=True))
    else:
        g = torch.Generator().manual_seed(4)
        scores = torch.rand(count, count, generator=g) * 0.5
        high = torch.rand(count, count, generator=g) < 1.2 / count
        scores[high] += 0.4
        scores = torch.maximum(scores, scores.t())
    return f"kernel-greedy-merge-{structure}-P{count}", scores.to(DEVICE)


def test_greedy_merge_reference(benchmark, merge_scores):
    from engine.encoding import greedy_merge

    benchmark.group, scores = merge_scores
    benchmark.pedantic(lambda: greedy_merge(scores.cpu().numpy()), rounds=20, warmup_rounds=2)


def test_greedy_merge_kernel(benchmark, merge_scores):
    benchmark.group, scores = merge_scores
    _skip_unless_compiled()
    from engine.encoding import greedy_merge as reference
    from kernels.encode import greedy_merge

    groups = benchmark.pedantic(_synchronized(greedy_merge), args=(scores,), rounds=20, warmup_rounds=2)
    benchmark.extra_info["equal_to_reference"] = groups.tolist() == reference(scores.cpu().numpy()).tolist()


MINING_SCENES = {"150k": 150_000, "1M": 1_000_000}  # points of the synthetic room; ~40% are object points


@pytest.fixture(scope="module", params=list(MINING_SCENES), ids=str)
def mining_inputs(request) -> tuple[str, tuple[torch.Tensor, ...]]:
    """(group name, (xyz_m, labels, heat) on DEVICE): the object points of a synthetic room with a
    heatmap peaked at each object's centroid (``checks.mining_scenes``)."""
    from checks.mining_scenes import room_object_points

    arrays = room_object_points(MINING_SCENES[request.param], seed=0)
    return f"kernel-mining-{request.param}", tuple(torch.from_numpy(a).to(DEVICE) for a in arrays)


def test_mining_reference(benchmark, mining_inputs):
    from engine.encoding import mine_scene

    benchmark.group, inputs = mining_inputs
    cands = benchmark.pedantic(_synchronized(mine_scene), args=inputs, rounds=3, warmup_rounds=1)
    benchmark.extra_info["object_points"] = int(inputs[0].shape[0])
    benchmark.extra_info["candidates"] = int(cands.points.size)


def test_mining_kernel(benchmark, mining_inputs):
    benchmark.group, inputs = mining_inputs
    _skip_unless_compiled()
    import numpy as np

    from checks.candidates import padded_to_host
    from engine.encoding import mine_scene as reference
    from kernels.encode import mine_scene

    got = padded_to_host(benchmark.pedantic(_synchronized(mine_scene), args=inputs, rounds=20, warmup_rounds=2))
    want = reference(*inputs)
    benchmark.extra_info["object_points"] = int(inputs[0].shape[0])
    benchmark.extra_info["identical"] = all(np.array_equal(getattr(got, f), getattr(want, f)) for f in
                                            ("points", "sizes", "fg_owner", "fg_points", "bg_owner", "bg_points"))
