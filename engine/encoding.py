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


def heat_and_threshold(heat: torch.Tensor, thres: float = HEAT_THRESHOLD) -> tuple[np.ndarray, np.float32]:
    """The official op's rescaling quirk (SPEC §4.1): tiny heat values are scaled up to 1e-6.

    heat (No,) float32 softmax. Returns the heat as the scan sees it and the float32 stop threshold.
    """
    heat_min = heat.min() if heat.numel() else torch.tensor(0.0)
    if heat_min < 1e-6 and heat_min != 0:
        scale = 1e-6 / heat_min
        thres = float(thres * scale)
        heat = heat * scale
    return heat.cpu().numpy(), np.float32(max(1e-6, thres))


class _Grid:
    """Object points bucketed into cubic cells of edge just over 2R (27 cells cover a 2R ball)."""

    def __init__(self, xyz: np.ndarray, cell: float):
        cells = np.floor((xyz - xyz.min(axis=0)) / cell).astype(np.int64) + 1
        self.dims = cells.max(axis=0) + 2
        keys = (cells[:, 0] * self.dims[1] + cells[:, 1]) * self.dims[2] + cells[:, 2]
        self.order = np.argsort(keys, kind="stable")
        unique, starts, counts = np.unique(keys[self.order], return_index=True, return_counts=True)
        spans = zip(starts.tolist(), (starts + counts).tolist(), strict=True)
        self.ranges = dict(zip(unique.tolist(), spans, strict=True))
        self.cells = cells
        step = np.array([self.dims[1] * self.dims[2], self.dims[2], 1])
        offsets = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3)
        self.neighbour_steps = (offsets @ step).tolist()
        self.step = step

    def around(self, point: int) -> np.ndarray:
        """Indices of the points in the 27 cells around ``point``'s cell."""
        key = int(self.cells[point] @ self.step)
        spans = [self.ranges[k] for k in (key + s for s in self.neighbour_steps) if k in self.ranges]
        return np.concatenate([self.order[a:b] for a, b in spans])


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
    visit_order = np.argsort(-heat, kind="stable")
    rank = np.empty(num, dtype=np.int64)
    rank[visit_order] = np.arange(num)
    visited_by_rank = np.zeros(num + 1, dtype=bool)  # a sentinel False at the end
    grid = _Grid(xyz_m, 2 * radius + 1e-3) if num else None

    points, sizes, fg_lists, bg_lists = [], [], [], []
    position = 0
    while len(points) < max_candidates:
        position += int(np.argmin(visited_by_rank[position:]))
        if position >= num:
            break
        q = int(visit_order[position])
        if heat[q] < thres:
            break
        near = grid.around(q)
        delta = xyz_m[near] - xyz_m[q]
        d2 = delta[:, 0] * delta[:, 0] + delta[:, 1] * delta[:, 1] + delta[:, 2] * delta[:, 2]
        in_ball = d2 < r2
        visited_by_rank[rank[near[in_ball]]] = True
        same = labels[near] == labels[q]
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
    """Pairwise merge probabilities A (P, P) float32: MLP on ``max(|d_i - d_j|, 1e-6)`` (SPEC §6)."""
    count = descriptors.shape[0]
    diff = (descriptors.unsqueeze(1) - descriptors.unsqueeze(0)).abs().clamp(min=1e-6)
    return model.merge_scores(diff.view(count * count, descriptors.shape[1])).view(count, count)


def greedy_merge(merge_probs: np.ndarray, threshold: float = MERGE_THRESHOLD) -> np.ndarray:
    """Greedy aggregation (supplementary Algorithm 2): group id of each candidate (P,) int64.

    Repeatedly takes the first maximum in row-major order while it exceeds ``threshold``,
    joins the two groups under the smaller id and zeroes all scores inside the new group.
    """
    scores = np.array(merge_probs, dtype=np.float32, copy=True)
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
