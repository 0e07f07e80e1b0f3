"""Encoding: candidate mining, description, merging and kernel generation (SPEC §4–7).

Mining is a greedy scan in heat order and stays sequential, but each visit touches only the
points of the 27 grid cells (cell = 2R) around the visited point, so its cost does not grow with
the scene. Description, pairwise merge scores and kernel averaging are single tensor operations;
the greedy merge loops once per accepted merge (at most P - 1 times) over a (P, P) array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.model import DKNet

RADIUS_M = 0.3
HEAT_THRESHOLD = 0.0
LOCAL_THRESHOLD = 0.5
MAX_CANDIDATES = 150
MAX_FOREGROUND = 2000
MAX_BACKGROUND = 2000
MERGE_THRESHOLD = 0.5


@dataclass
class Candidates:
    """Accepted candidates (P of them) and their neighbourhoods, as object-point indices."""

    points: np.ndarray  # (P,) int64 object-point index of each candidate, in acceptance order
    sizes: np.ndarray  # (P,) int64 foreground size (capped at MAX_FOREGROUND)
    fg_owner: np.ndarray  # (Sf,) int64 candidate of each foreground entry
    fg_points: np.ndarray  # (Sf,) int64 object-point index of each foreground entry
    bg_owner: np.ndarray  # (Sb,) int64
    bg_points: np.ndarray  # (Sb,) int64


def scan_heat(heat: torch.Tensor, thres: float = HEAT_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """The official op's rescaling quirk (SPEC §4.1): when the smallest heat is below 1e-6 and not
    0, the heat and the stop threshold are scaled by 1e-6 / min; the threshold is then at least 1e-6.

    heat (No,) float32 softmax, on any device. Returns the heat as the scan sees it (No,) float32
    and the stop threshold (1,) float32, on the same device, without a host sync.
    """
    heat_min = heat.min() if heat.numel() else torch.zeros((), device=heat.device)
    rescale = (heat_min < 1e-6) & (heat_min != 0)
    scale = torch.where(rescale, 1e-6 / heat_min, torch.ones_like(heat_min))
    thres_scaled = torch.where(rescale, thres * scale, torch.full_like(heat_min, thres))
    return heat * scale, torch.clamp(thres_scaled, min=np.float32(1e-6)).reshape(1)


def heat_and_threshold(heat: torch.Tensor, thres: float = HEAT_THRESHOLD) -> tuple[np.ndarray, np.float32]:
    """``scan_heat`` for the host scan: the heat (No,) float32 numpy, the threshold np.float32."""
    scan, stop = scan_heat(heat, thres)
    return scan.cpu().numpy(), np.float32(stop.item())


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable ascending argsort of int64 keys (torch's integer sort is a radix sort: ~5x numpy's)."""
    return torch.sort(torch.from_numpy(keys), stable=True).indices.numpy()


def heat_order(heat: torch.Tensor) -> torch.Tensor:
    """Visit order (No,) int64: indices by descending heat, ties by ascending index, on heat's
    device. heat (No,) float32, all >= 0, whose IEEE bit patterns therefore sort like the values."""
    bits = heat.float().contiguous().view(torch.int32).to(torch.int64)
    return torch.sort(-bits, stable=True).indices


class _Grid:
    """Object points sorted into cubic cells of edge just over 2R: the 27 cells around a point
    cover its 2R ball, and they are 9 contiguous runs of the sorted arrays (z-neighbours are
    adjacent keys), so a neighbourhood is gathered with slices, not fancy indexing."""

    def __init__(self, xyz: np.ndarray, labels: np.ndarray, rank: np.ndarray, cell: float):
        cells = np.floor((xyz - xyz.min(axis=0)) / cell).astype(np.int64) + 1
        dims = cells.max(axis=0) + 2
        keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        order = _stable_argsort(keys)
        self.keys = keys[order]
        self.point_keys = keys
        self.ids = order
        self.coords = [np.ascontiguousarray(xyz[order, k]) for k in range(3)]
        self.labels = labels[order]
        self.rank = rank[order]
        dx, dy = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
        self.column_steps = (dx * dims[1] + dy).ravel() * dims[2]  # 9 (x, y) columns

    def around(self, point: int) -> tuple[slice, ...]:
        """The 9 runs of sorted positions holding the 27 cells around ``point``'s cell."""
        centres = self.point_keys[point] + self.column_steps
        starts = np.searchsorted(self.keys, centres - 1, side="left").tolist()
        ends = np.searchsorted(self.keys, centres + 1, side="right").tolist()
        return tuple(slice(a, b) for a, b in zip(starts, ends, strict=True) if b > a)

    def gather(self, array: np.ndarray, runs: tuple[slice, ...]) -> np.ndarray:
        return np.concatenate([array[run] for run in runs])


def _first_unvisited(visited: np.ndarray, start: int, window: int = 4096) -> int:
    """First index >= start with ``visited`` False (the array ends with a False sentinel)."""
    while True:
        span = visited[start:start + window]
        if not span.all():
            return start + int(np.argmin(span))
        start += window


def mine_candidates(
    xyz_m: np.ndarray,
    labels: np.ndarray,
    heat: np.ndarray,
    thres: np.float32,
    radius: float = RADIUS_M,
    local_thres: float = LOCAL_THRESHOLD,
    max_candidates: int = MAX_CANDIDATES,
    max_fg: int = MAX_FOREGROUND,
    max_bg: int = MAX_BACKGROUND,
) -> Candidates:
    """LN-NMS candidate mining (the official ``topk_nms``; SPEC §4.2–4.6), on object points.

    xyz_m (No, 3) float32, labels (No,) int, heat (No,) float32 as returned by
    ``heat_and_threshold``. Points are visited by descending heat (ties: lower index first);
    fg/bg lists keep the first ``max_fg``/``max_bg`` points by index **[fix]**.
    """
    num = xyz_m.shape[0]
    xyz_m = np.ascontiguousarray(xyz_m, dtype=np.float32)
    r2 = np.float32(radius) * np.float32(radius)
    r2_bg = np.float32(4) * r2
    local = np.float32(local_thres)
    visit_order = heat_order(torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))).numpy()
    rank = np.empty(num, dtype=np.int64)
    rank[visit_order] = np.arange(num)
    visited_by_rank = np.zeros(num + 1, dtype=bool)  # a sentinel False at the end
    grid = _Grid(xyz_m, labels, rank, 2 * radius + 1e-3) if num else None
    xq, yq, zq = (xyz_m[:, k] for k in range(3))

    points, sizes, fg_lists, bg_lists = [], [], [], []
    position = 0
    while len(points) < max_candidates:
        position = _first_unvisited(visited_by_rank, position)
        if position >= num:
            break
        q = int(visit_order[position])
        if heat[q] < thres:
            break
        runs = grid.around(q)
        near = grid.gather(grid.ids, runs)
        dx = grid.gather(grid.coords[0], runs) - xq[q]
        dy = grid.gather(grid.coords[1], runs) - yq[q]
        dz = grid.gather(grid.coords[2], runs) - zq[q]
        d2 = dx * dx + dy * dy + dz * dz  # float32, the official op's order
        in_ball = d2 < r2
        visited_by_rank[grid.gather(grid.rank, runs)[in_ball]] = True
        same = grid.gather(grid.labels, runs) == labels[q]
        fg = np.sort(near[in_ball & same])[:max_fg]
        bg = np.sort(near[(d2 < r2_bg) & ~same])[:max_bg]
        max_heat = max(heat[q], heat[fg].max())
        if heat[q] / max_heat < local:
            continue
        points.append(q)
        sizes.append(fg.size)
        fg_lists.append(fg)
        bg_lists.append(bg)

    def owners(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not lists:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(lists)), [a.size for a in lists])
        return owner.astype(np.int64), np.concatenate(lists).astype(np.int64)

    fg_owner, fg_points = owners(fg_lists)
    bg_owner, bg_points = owners(bg_lists)
    return Candidates(np.asarray(points, np.int64), np.asarray(sizes, np.int64),
                      fg_owner, fg_points, bg_owner, bg_points)


def mine_scene(xyz_m: torch.Tensor, labels: torch.Tensor, heat: torch.Tensor) -> Candidates:
    """SPEC §4 for one scene: xyz_m (No, 3) float32, labels (No,) int and heat (No,) float32
    softmax of the object points, on any device (the scan runs on the host)."""
    heat_scan, thres = heat_and_threshold(heat)
    return mine_candidates(xyz_m.cpu().numpy(), labels.cpu().numpy(), heat_scan, thres)


def pooled_mean(features: torch.Tensor, owner: torch.Tensor, rows: torch.Tensor, count: int) -> torch.Tensor:
    """Mean of ``features[rows]`` per owner (count, C); an owner with no rows gets the mean of all."""
    sums = torch.zeros(count, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, owner, features[rows])
    n = torch.bincount(owner, minlength=count).unsqueeze(1)
    means = sums / n.clamp(min=1)
    return torch.where(n > 0, means, features.mean(dim=0, keepdim=True))


def describe_candidates(cands: Candidates, kernel_features: torch.Tensor, xyz_m: torch.Tensor,
                        offsets: torch.Tensor) -> torch.Tensor:
    """Candidate descriptors ``[Fn (16), Fb (16), pos (3)]`` (P, 35) float32 (SPEC §5).

    kernel_features (No, 16), xyz_m (No, 3), offsets (No, 3) of object points.
    """
    device = kernel_features.device
    count = cands.points.size

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    fg = pooled_mean(kernel_features, t(cands.fg_owner), t(cands.fg_points), count)
    bg = pooled_mean(kernel_features, t(cands.bg_owner), t(cands.bg_points), count)
    q = t(cands.points)
    return torch.cat((fg, bg, xyz_m[q] + offsets[q]), dim=1)


def merge_probabilities(model: DKNet, descriptors: torch.Tensor) -> torch.Tensor:
    """Pairwise merge probabilities A (P, P) float32: MLP on ``max(|d_i - d_j|, 1e-6)`` (SPEC §6).

    ``|d_i - d_j|`` is symmetric, but a GEMM's blocking can round rows (i, j) and (j, i) apart by an
    ulp, and the greedy merge's first-maximum rule would then see a different matrix on different
    machines. So each unordered pair (i <= j) is scored once and mirrored: A is symmetric bit for bit
    on every machine, and the MLP runs on P (P + 1) / 2 rows instead of P².
    """
    count = descriptors.shape[0]
    rows, cols = torch.triu_indices(count, count, device=descriptors.device)
    pair_features = (descriptors[rows] - descriptors[cols]).abs().clamp(min=1e-6)  # (P (P + 1) / 2, 35)
    pair_scores = model.merge_scores(pair_features)
    scores = descriptors.new_empty(count, count)
    scores[rows, cols] = pair_scores
    scores[cols, rows] = pair_scores
    return scores


def greedy_merge(merge_probs: torch.Tensor | np.ndarray, threshold: float = MERGE_THRESHOLD) -> np.ndarray:
    """Greedy aggregation (supplementary Algorithm 2): group id of each candidate (P,) int64, on the
    host, from merge_probs (P, P) float32 on any device.

    Repeatedly takes the first maximum in row-major order while it exceeds ``threshold``,
    joins the two groups under the smaller id and zeroes all scores inside the new group.
    """
    scores = torch.as_tensor(merge_probs).detach().cpu().numpy().astype(np.float32, copy=True)
    count = scores.shape[0]
    group = np.arange(count, dtype=np.int64)
    np.fill_diagonal(scores, 0)
    threshold32 = np.float32(threshold)
    while count and scores.max() > threshold32:
        i, j = divmod(int(scores.argmax()), count)
        members = np.flatnonzero((group == group[i]) | (group == group[j]))
        scores[np.ix_(members, members)] = 0
        group[members] = min(group[i], group[j])
    return group


@dataclass
class Instances:
    """Merged instances (I of them), in ascending group id order."""

    group: np.ndarray  # (P,) int64 group id of each candidate
    centre_points: torch.Tensor  # (I,) int64 object-point index of each instance centre
    kernels: torch.Tensor  # (I, 16) float32 size-weighted mean of members' Fn


def merge_instances(group: np.ndarray, cands: Candidates, heat: torch.Tensor,
                    fg_features: torch.Tensor) -> Instances:
    """Instances from candidate groups (SPEC §6): centre = member with the highest heat (first on
    ties, members in candidate order), kernel = mean of members' Fn weighted by their size.

    heat (No,) float32 (unscaled softmax), fg_features (P, 16) float32.
    """
    device = fg_features.device
    ids, member_instance = np.unique(group, return_inverse=True)
    count = ids.size
    member_heat = heat.cpu().numpy()[cands.points]
    # Best member per instance: sort by (instance, -heat, candidate index) and take each first.
    order = np.lexsort((np.arange(group.size), -member_heat, member_instance))
    first = np.ones(order.size, dtype=bool)
    first[1:] = member_instance[order][1:] != member_instance[order][:-1]
    centre_candidates = order[first]
    owner = torch.from_numpy(member_instance.astype(np.int64)).to(device)
    weights = torch.from_numpy(cands.sizes).to(device=device, dtype=torch.float32)
    weighted = torch.zeros(count, fg_features.shape[1], device=device).index_add_(
        0, owner, weights.unsqueeze(1) * fg_features)
    total = torch.zeros(count, device=device).index_add_(0, owner, weights)
    return Instances(
        group=group,
        centre_points=torch.from_numpy(cands.points[centre_candidates]).to(device),
        kernels=weighted / total.unsqueeze(1),
    )
