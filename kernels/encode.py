"""Encoding kernels (SPEC §4–7): mining, candidate description, fused merge scores, greedy merge.

* ``mine_scene``: the LN-NMS scan as parallel chunks of the heat order (``kernels.mine``).
* ``describe_candidates``: one launch, one program per candidate; each candidate's fg/bg entries
  are the filled prefix of its row (``PaddedCandidates``), pooled in blocks of entries.
* ``merge_probabilities``: one program per (candidate i, block of candidates j >= i) computes
  ``x = max(|d_i - d_j|, 1e-6)`` (35 values, zero-padded to 64) and the merge MLP with its three
  BatchNorms folded into the convs, in registers: no (P, P, 35) tensor exists. Each unordered pair
  is scored once and written to both (i, j) and (j, i), as in the reference: the matrix is
  symmetric by construction, on every machine and compiler.
* ``greedy_merge``: the greedy aggregation as parallel connected components. The reference loop
  (take the first maximum of the score matrix above the threshold, join the two groups under the
  smaller id, zero the new group's block) only ever joins two candidates whose score (either
  direction) is above the threshold, and it zeroes only scores inside one group, so it ends exactly
  when every such pair shares a group: its groups are the connected components of the undirected
  graph "A[i, j] > 0.5 or A[j, i] > 0.5", each labelled with its smallest candidate, whatever the
  order of the merges, for symmetric and asymmetric matrices alike. One precondition: no NaN off
  the diagonal (the reference's ``max`` is then NaN and it merges nothing); the launcher checks it
  on the device and returns the reference's answer (every candidate alone) without a host sync.
  One program of 4 warps hooks stars of candidates and jumps pointers over the (P, P) adjacency
  (``_components_kernel``): every round is two passes of vector operations over all candidates,
  and there are at most log2(P) + 2 rounds, whatever the number of pairs above the threshold.
* ``merge_instances``: centres and size-weighted kernel averages with device tensor ops (a
  one-hot (I, P) matrix product, deterministic), then the weight generator runs in torch.

Determinism and precision: see ``kernels._triton`` (no atomics here).
"""

from __future__ import annotations

import numpy as np
import torch

from engine import encoding
from engine.model import EMBED, DKNet, batchnorm_affine
from kernels import mine
from kernels._triton import jit, require_triton, tl, triton
from kernels.mine import PaddedCandidates

DESCRIPTOR = 2 * EMBED + 3  # [Fn (16), Fb (16), pos (3)]
MERGE_PADDED = 64  # descriptor channels padded to a power of two for tl.dot
MERGE_HIDDEN_LAYERS = 3
BLOCK_PAIRS = 32  # candidates j per merge program: (32, 64) activations, (64, 64) weights in registers
BLOCK_ENTRIES = 64  # fg/bg entries pooled per step
MAX_GREEDY_CANDIDATES = 256  # labels of all candidates live in one register vector
BLOCK_ROWS = 16  # adjacency rows per step of a propagation round: (16, 256) int32 labels in registers


@jit
def _pooled_mean(features_ptr, rows_ptr, counts_ptr, width, fallback, candidate,
                 EMBED: tl.constexpr, BLOCK_ENTRIES: tl.constexpr):
    """Mean (EMBED,) float32 of features[rows[c, :counts[c]]]; ``fallback`` if the row is empty."""
    channels = tl.arange(0, EMBED)
    count = tl.load(counts_ptr + candidate)
    sums = tl.zeros((EMBED,), tl.float32)
    for first in range(0, count, BLOCK_ENTRIES):
        entries = first + tl.arange(0, BLOCK_ENTRIES)
        valid = entries < count
        points = tl.load(rows_ptr + candidate * width + entries, mask=valid, other=0)
        rows = tl.load(features_ptr + points[:, None] * EMBED + channels[None, :], mask=valid[:, None], other=0.0)
        sums += tl.sum(rows, axis=0)
    count_f32 = count.to(tl.float32)
    means = tl.math.div_rn(sums, tl.full((EMBED,), 1.0, tl.float32) * tl.maximum(count_f32, 1.0))
    return tl.where(count_f32 > 0, means, fallback)


@jit
def _describe_kernel(features_ptr, fallback_ptr, fg_rows_ptr, fg_counts_ptr, fg_width, bg_rows_ptr, bg_counts_ptr,
                     bg_width, candidates_ptr, xyz_ptr, offsets_ptr, descriptors_ptr,
                     EMBED: tl.constexpr, BLOCK_ENTRIES: tl.constexpr):
    """Grid (P,). features (No, EMBED), fallback (EMBED,) = their mean, xyz/offsets (No, 3) float32;
    fg/bg rows (P, width) int64 of object-point indices, the first counts (P,) int64 of each row
    used; candidates (P,) int64 object-point index. Writes descriptors[c] (P, 2·EMBED + 3) =
    [mean fg, mean bg, xyz[q] + offsets[q]]."""
    candidate = tl.program_id(0)
    channels = tl.arange(0, EMBED)
    fallback = tl.load(fallback_ptr + channels)
    row = descriptors_ptr + candidate * (2 * EMBED + 3)
    tl.store(row + channels, _pooled_mean(features_ptr, fg_rows_ptr, fg_counts_ptr, fg_width, fallback, candidate,
                                          EMBED, BLOCK_ENTRIES))
    tl.store(row + EMBED + channels, _pooled_mean(features_ptr, bg_rows_ptr, bg_counts_ptr, bg_width, fallback,
                                                  candidate, EMBED, BLOCK_ENTRIES))
    axes = tl.arange(0, 4)
    point = tl.load(candidates_ptr + candidate)
    position = (tl.load(xyz_ptr + point * 3 + axes, mask=axes < 3)
                + tl.load(offsets_ptr + point * 3 + axes, mask=axes < 3))
    tl.store(row + 2 * EMBED + axes, position, mask=axes < 3)


@jit
def _merge_kernel(descriptors_ptr, weights_ptr, biases_ptr, scores_ptr, count,
                  CHANNELS: tl.constexpr, PADDED: tl.constexpr, HIDDEN_LAYERS: tl.constexpr,
                  BLOCK_PAIRS: tl.constexpr):
    """Grid (P, cdiv(P, BLOCK_PAIRS)). descriptors (P, CHANNELS) float32; weights (HIDDEN_LAYERS + 1,
    PADDED, PADDED) float32 (out, in), zero-padded, BN folded, the last layer's single output in
    row 0; biases (HIDDEN_LAYERS + 1, PADDED). Writes scores[i, j] and scores[j, i] (P, P) float32 =
    sigmoid(MLP(max(|d_i - d_j|, 1e-6))) for the pairs j >= i of its block: each unordered pair is
    scored once, so the matrix is symmetric bit for bit; blocks wholly below the diagonal do nothing."""
    i = tl.program_id(0)
    first_j = tl.program_id(1) * BLOCK_PAIRS
    if first_j + BLOCK_PAIRS > i:
        js = first_j + tl.arange(0, BLOCK_PAIRS)
        j_valid = (js < count) & (js >= i)
        channels = tl.arange(0, PADDED)
        real = channels < CHANNELS
        d_i = tl.load(descriptors_ptr + i * CHANNELS + channels, mask=real, other=0.0)
        d_j = tl.load(descriptors_ptr + js[:, None] * CHANNELS + channels[None, :],
                      mask=j_valid[:, None] & real[None, :], other=0.0)
        x = tl.where(real[None, :], tl.maximum(tl.abs(d_i[None, :] - d_j), 1e-6), 0.0)  # (B, PADDED)
        for layer in tl.static_range(HIDDEN_LAYERS):
            w_t = tl.load(weights_ptr + layer * PADDED * PADDED + channels[None, :] * PADDED + channels[:, None])
            bias = tl.load(biases_ptr + layer * PADDED + channels)
            x = tl.maximum(tl.dot(x, w_t, input_precision="ieee") + bias[None, :], 0.0)
        w_out = tl.load(weights_ptr + HIDDEN_LAYERS * PADDED * PADDED + channels)
        b_out = tl.load(biases_ptr + HIDDEN_LAYERS * PADDED)
        scores = tl.sigmoid(tl.sum(x * w_out[None, :], axis=1) + b_out)
        tl.store(scores_ptr + i * count + js, scores, mask=j_valid)
        tl.store(scores_ptr + js * count + i, scores, mask=j_valid)


@jit
def _components_kernel(adjacency_ptr, labels_ptr, scratch_ptr, count,
                       BLOCK_CANDIDATES: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    """Grid (1,). adjacency (P, P) int8, symmetric, 1 on the diagonal; scratch (P,) int32; labels
    (P,) int32 written: the smallest candidate of each one's connected component.

    Rounds of root hooking and pointer jumping (gathers only, no atomics) over labels L that are
    stars (L[L[i]] = L[i], L[i] <= i, L[i] in i's component; initially L[i] = i):
    nearest  M[i] = min(L[j] : adjacency[i, j])  (i included, so M[i] <= L[i]);
    hook     R[r] = min(M[i] : L[i] = r) for each root r (so R[r] <= r); the star of r takes the
             smallest root next to it;
    jump     N[i] = R[L[i]], then N <- N[N] until it no longer changes: stars again, N <= L.
    The labels only decrease, so the rounds end; when N == L no two stars touch, so each star is a
    component, and its root is its smallest member m (L[m] <= m forces L[m] = m). Every star next
    to another one joins at least one other in a round, so a component's stars at least halve:
    at most log2(P) + 2 rounds (7 on 256-candidate random chains), each two passes over the
    adjacency. The labels go through global memory (gathers); the barriers that order those writes
    and reads are no-ops in the interpreter, so only a GPU run (``profiling.gpu_check``) tests them.
    """
    slots = tl.arange(0, BLOCK_CANDIDATES)
    valid = slots < count
    tl.store(labels_ptr + slots, slots, mask=valid)
    changed = count > 0
    while changed:
        tl.debug_barrier()  # the last round's labels are stored
        labels = tl.load(labels_ptr + slots, mask=valid, other=BLOCK_CANDIDATES)  # (BLOCK_CANDIDATES,) int32
        for first in range(0, count, BLOCK_ROWS):
            rows = first + tl.arange(0, BLOCK_ROWS)
            edges = tl.load(adjacency_ptr + rows[:, None] * count + slots[None, :],
                            mask=(rows < count)[:, None] & valid[None, :], other=0)  # (BLOCK_ROWS, BLOCK_CANDIDATES)
            tl.store(scratch_ptr + rows, tl.min(tl.where(edges != 0, labels[None, :], BLOCK_CANDIDATES), axis=1),
                     mask=rows < count)
        tl.debug_barrier()  # every M is stored
        nearest = tl.load(scratch_ptr + slots, mask=valid, other=BLOCK_CANDIDATES)
        tl.debug_barrier()  # every lane has read M before the hooks overwrite it
        for first in range(0, count, BLOCK_ROWS):
            roots = first + tl.arange(0, BLOCK_ROWS)
            members = labels[None, :] == roots[:, None]  # (BLOCK_ROWS, BLOCK_CANDIDATES)
            tl.store(scratch_ptr + roots, tl.min(tl.where(members, nearest[None, :], BLOCK_CANDIDATES), axis=1),
                     mask=roots < count)
        tl.debug_barrier()  # every R is stored
        tl.store(labels_ptr + slots, tl.load(scratch_ptr + labels, mask=valid, other=0), mask=valid)
        jumped = labels
        jumping = changed
        while jumping:
            tl.debug_barrier()  # the last jump is stored
            pointers = tl.load(labels_ptr + slots, mask=valid, other=0)
            jumped = tl.load(labels_ptr + pointers, mask=valid, other=0)
            tl.debug_barrier()  # every gather is done before the jumps overwrite the pointers
            tl.store(labels_ptr + slots, jumped, mask=valid)
            jumping = tl.sum(((jumped != pointers) & valid).to(tl.int32), axis=0) > 0
        changed = tl.sum(((jumped != labels) & valid).to(tl.int32), axis=0) > 0


def mine_scene(xyz_m: torch.Tensor, labels: torch.Tensor, heat: torch.Tensor) -> PaddedCandidates:
    """``engine.encoding.mine_scene`` on the device (``kernels.mine``): xyz_m (No, 3) float32,
    labels (No,) int and heat (No,) float32 softmax of the object points."""
    scan, thres = encoding.scan_heat(heat)
    return mine.mine_candidates(xyz_m, labels, scan, thres)


def describe_candidates(cands: PaddedCandidates, kernel_features: torch.Tensor, xyz_m: torch.Tensor,
                        offsets: torch.Tensor) -> torch.Tensor:
    """``engine.encoding.describe_candidates`` in one launch: descriptors (P, 35) float32.

    kernel_features (No, 16), xyz_m (No, 3), offsets (No, 3) float32 of the object points.
    """
    device = kernel_features.device
    require_triton(device)
    count = cands.points.numel()
    descriptors = torch.empty(count, DESCRIPTOR, device=device)
    if count:
        features = kernel_features.float().contiguous()
        _describe_kernel[(count,)](features, features.mean(dim=0),
                                   cands.fg_rows.contiguous(), cands.fg_counts, cands.fg_rows.shape[1],
                                   cands.bg_rows.contiguous(), cands.bg_counts, cands.bg_rows.shape[1],
                                   cands.points, xyz_m.float().contiguous(), offsets.float().contiguous(),
                                   descriptors, EMBED=EMBED, BLOCK_ENTRIES=BLOCK_ENTRIES)
    return descriptors


def fold_merge_mlp(model: DKNet) -> tuple[torch.Tensor, torch.Tensor]:
    """The merge MLP with BatchNorm folded into its convs (in float64, then float32), zero-padded:
    weights (4, 64, 64) (out, in) and biases (4, 64), on the model's device."""
    tower = model.merge_branch
    device = tower[MERGE_HIDDEN_LAYERS].weight.device  # folded where the weights are: no host copies
    weights = torch.zeros(MERGE_HIDDEN_LAYERS + 1, MERGE_PADDED, MERGE_PADDED, dtype=torch.float64, device=device)
    biases = torch.zeros(MERGE_HIDDEN_LAYERS + 1, MERGE_PADDED, dtype=torch.float64, device=device)
    for layer in range(MERGE_HIDDEN_LAYERS):
        conv, bn, _ = tower[layer]
        scale, shift = batchnorm_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
        weights[layer, :DESCRIPTOR, :DESCRIPTOR] = conv.weight[:, :, 0].double() * scale[:, None]
        biases[layer, :DESCRIPTOR] = shift
    out = tower[MERGE_HIDDEN_LAYERS]
    weights[MERGE_HIDDEN_LAYERS, 0, :DESCRIPTOR] = out.weight[0, :, 0].double()
    biases[MERGE_HIDDEN_LAYERS, 0] = out.bias[0].double()
    return weights.float(), biases.float()


def merge_probabilities(model: DKNet, descriptors: torch.Tensor,
                        folded: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``engine.encoding.merge_probabilities`` fused: A (P, P) float32 from descriptors (P, 35).
    ``folded``: ``fold_merge_mlp(model)``, computed here when not given."""
    require_triton(descriptors.device)
    count = descriptors.shape[0]
    weights, biases = folded if folded is not None else fold_merge_mlp(model)
    scores = torch.empty(count, count, device=descriptors.device)
    if count:
        _merge_kernel[(count, triton.cdiv(count, BLOCK_PAIRS))](
            descriptors.float().contiguous(), weights, biases, scores, count, CHANNELS=DESCRIPTOR,
            PADDED=MERGE_PADDED, HIDDEN_LAYERS=MERGE_HIDDEN_LAYERS, BLOCK_PAIRS=BLOCK_PAIRS)
    return scores


def greedy_merge(merge_probs: torch.Tensor, threshold: float = encoding.MERGE_THRESHOLD) -> torch.Tensor:
    """``engine.encoding.greedy_merge`` on the device: group id of each candidate (P,) int64.

    merge_probs (P, P) float32, P <= 256, symmetric or not: the connected components of the pairs
    scoring above the threshold in either direction, each labelled by its smallest candidate, in
    one single-program launch (module docstring); no host sync. Scores that are NaN off the
    diagonal stop the reference before its first merge: then every candidate is its own group.
    """
    device = merge_probs.device
    require_triton(device)
    count = merge_probs.shape[0]
    if count > MAX_GREEDY_CANDIDATES:
        raise ValueError(f"greedy_merge holds at most {MAX_GREEDY_CANDIDATES} candidates, got {count}")
    alone = torch.arange(count, device=device)
    if count < 2:
        return alone
    scores = merge_probs.float()
    diagonal = torch.eye(count, dtype=torch.bool, device=device)
    above = scores > np.float32(threshold)
    adjacency = (above | above.t() | diagonal).to(torch.int8).contiguous()
    labels = torch.empty(count, dtype=torch.int32, device=device)
    scratch = torch.empty_like(labels)
    _components_kernel[(1,)](adjacency, labels, scratch, count, BLOCK_CANDIDATES=triton.next_power_of_2(count),
                             BLOCK_ROWS=BLOCK_ROWS)
    stopped = (torch.isnan(scores) & ~diagonal).any()  # the reference's max() is NaN: no merge at all
    return torch.where(stopped, alone, labels.long())


def merge_instances(groups: torch.Tensor, cands: PaddedCandidates, heat: torch.Tensor,
                    fg_features: torch.Tensor) -> encoding.Instances:
    """``engine.encoding.merge_instances`` with device tensor ops (no per-instance loop).

    groups (P,) int64 on the device, heat (No,) float32, fg_features (P, 16) float32.
    """
    device = fg_features.device
    count = groups.numel()
    ids, member_instance = torch.unique(groups, sorted=True, return_inverse=True)
    points = cands.points
    member_heat = heat[points]
    best_heat = torch.full((ids.numel(),), -1.0, device=device).scatter_reduce(
        0, member_instance, member_heat, reduce="amax")
    candidate_ids = torch.arange(count, device=device)
    first_best = torch.where(member_heat == best_heat[member_instance], candidate_ids, count)
    centre_candidates = torch.full((ids.numel(),), count, device=device).scatter_reduce(
        0, member_instance, first_best, reduce="amin")
    one_hot = (member_instance.unsqueeze(0) == torch.arange(ids.numel(), device=device).unsqueeze(1)).float()
    weights = cands.sizes.float()
    kernels = (one_hot @ (weights.unsqueeze(1) * fg_features)) / (one_hot @ weights).unsqueeze(1)
    return encoding.Instances(group=groups.cpu().numpy(), centre_points=points[centre_candidates], kernels=kernels)


def compile_cases(case: type) -> list:
    """``kernels.compile_check`` specializations of this module's kernels (``case`` is its Case)."""
    return [
        case("describe_candidates", _describe_kernel,
             {"features_ptr": "*fp32", "fallback_ptr": "*fp32", "fg_rows_ptr": "*i64", "fg_counts_ptr": "*i64",
              "fg_width": "i32", "bg_rows_ptr": "*i64", "bg_counts_ptr": "*i64", "bg_width": "i32",
              "candidates_ptr": "*i64", "xyz_ptr": "*fp32", "offsets_ptr": "*fp32", "descriptors_ptr": "*fp32"},
             {"EMBED": EMBED, "BLOCK_ENTRIES": BLOCK_ENTRIES}),
        case("merge_probabilities", _merge_kernel,
             {"descriptors_ptr": "*fp32", "weights_ptr": "*fp32", "biases_ptr": "*fp32", "scores_ptr": "*fp32",
              "count": "i32"},
             {"CHANNELS": DESCRIPTOR, "PADDED": MERGE_PADDED, "HIDDEN_LAYERS": MERGE_HIDDEN_LAYERS,
              "BLOCK_PAIRS": BLOCK_PAIRS}),
        case("greedy_merge", _components_kernel, {"adjacency_ptr": "*i8", "labels_ptr": "*i32", "scratch_ptr": "*i32",
                                                          "count": "i32"},
             {"BLOCK_CANDIDATES": MAX_GREEDY_CANDIDATES, "BLOCK_ROWS": BLOCK_ROWS}),
    ]
