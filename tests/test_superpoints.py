"""Superpoints (SPEC §11): ScanNet segs.json, the mesh segmentator, and the source order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import superpoints as sp

F32 = np.float32


# ---------------------------------------------------------------------------------------------
# Meshes with known answers


def _grid_faces(index: np.ndarray) -> np.ndarray:
    """Two triangles per cell of a (rows, cols) vertex-index grid, counter-clockwise in (i, j)."""
    a, b = index[:-1, :-1].ravel(), index[1:, :-1].ravel()
    c, d = index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    return np.concatenate((np.stack((a, b, c), 1), np.stack((a, c, d), 1)))


def _plane(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n+1)² vertices on the unit square in z = 0, 2n² faces."""
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    vertices = np.stack((i.ravel() / n, j.ravel() / n, np.zeros(i.size)), 1)
    return vertices, _grid_faces(np.arange((n + 1) ** 2).reshape(n + 1, n + 1))


def _crease(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A floor (z = 0) and a wall (x = 0), unit squares of n×n cells meeting at 90° along the
    y axis. Returns vertices, faces and the vertex ids of floor-only, wall-only and crease."""
    t = np.arange(n + 1) / n
    floor = np.array([(x, y, 0.0) for x in t for y in t])  # index x_i * (n+1) + y_j
    wall = np.array([(0.0, y, z) for z in t[1:] for y in t])  # crease row (z = 0) is the floor's
    vertices = np.concatenate((floor, wall))
    floor_index = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    wall_index = np.concatenate((floor_index[:1], (n + 1) ** 2 + np.arange(n * (n + 1)).reshape(n, n + 1)))
    faces = np.concatenate((_grid_faces(floor_index), _grid_faces(wall_index)))
    crease = floor_index[0]
    floor_only = floor_index[1:].ravel()
    wall_only = wall_index[1:].ravel()
    return vertices, faces, floor_only, wall_only, crease


def test_flat_plane_is_one_segment():
    vertices, faces = _plane(10)
    ids = sp.segment_mesh(vertices, faces)
    assert ids.dtype == np.int64 and ids.shape == (121,)
    assert np.all(ids == 0)


def test_crease_splits_floor_from_wall():
    vertices, faces, floor_only, wall_only, crease = _crease(8)  # 9 crease vertices < 20
    ids = sp.segment_mesh(vertices, faces)
    assert ids.max() + 1 == 2
    assert np.all(ids[floor_only] == ids[floor_only[0]])
    assert np.all(ids[wall_only] == ids[wall_only[0]])
    assert ids[floor_only[0]] != ids[wall_only[0]]


def test_crease_line_is_its_own_segment_without_small_merging():
    vertices, faces, floor_only, wall_only, crease = _crease(8)
    ids = sp.segment_mesh(vertices, faces, seg_min_verts=1)
    floor_id, wall_id = ids[floor_only[0]], ids[wall_only[0]]
    assert np.all(ids[floor_only] == floor_id) and np.all(ids[wall_only] == wall_id)
    # Crease normals point half-way between floor and wall: every crease vertex is cut off both.
    assert not set(ids[crease].tolist()) & {floor_id, wall_id}
    assert ids.max() + 1 >= 3


def test_small_segments_only_merge_along_edges():
    # Two disconnected planes: the 9-vertex one stays apart, however small.
    big_v, big_f = _plane(10)
    small_v, small_f = _plane(2)
    vertices = np.concatenate((big_v, small_v + [5.0, 0.0, 0.0]))
    faces = np.concatenate((big_f, small_f + len(big_v)))
    ids = sp.segment_mesh(vertices, faces)
    np.testing.assert_array_equal(ids, np.repeat([0, 1], [len(big_v), len(small_v)]))


def test_larger_k_gives_fewer_segments():
    vertices, faces, *_ = _crease(8)
    assert sp.segment_mesh(vertices, faces, k_thresh=100.0, seg_min_verts=1).max() == 0
    assert sp.segment_mesh(vertices, faces, k_thresh=1e-9, seg_min_verts=1).max() > 2


def test_threshold_shrinks_with_component_size():
    # Path 0-1-2-3, k = 0.01: (0,1) joins at w=0 -> thresh 0 + 0.01/2 = 0.005.
    a, b = np.array([0, 1, 2]), np.array([1, 2, 3])
    joined = sp._felzenszwalb(4, a, b, np.array([0.0, 0.004, 0.02], F32), F32(0.01))
    assert len(set(joined[:3].tolist())) == 1 and joined[3] != joined[0]  # 0.004 <= 0.005 joins
    apart = sp._felzenszwalb(4, a, b, np.array([0.0, 0.006, 0.02], F32), F32(0.01))
    assert apart[0] == apart[1] and len({apart[1], apart[2], apart[3]}) == 3  # 0.006 > 0.005: no


@pytest.mark.parametrize("first_edge, expected", [((2, 3), [0, 0, 1, 1, 1]), ((1, 2), [0, 0, 0, 1, 1])])
def test_small_component_joins_along_first_sorted_edge(first_edge, expected):
    # Components {0,1}, {2}, {3,4} (min size 2): the singleton joins whichever neighbour its first
    # edge in sorted order reaches; afterwards both sides are large and nothing else joins.
    roots = np.array([0, 0, 2, 3, 3])
    other = (1, 2) if first_edge == (2, 3) else (2, 3)
    a, b = np.array([0, first_edge[0], other[0], 3]), np.array([1, first_edge[1], other[1], 4])
    joined = sp._first_appearance_ids(sp._join_small(5, roots, a, b, 2))
    np.testing.assert_array_equal(joined, expected)


def test_ids_are_numbered_by_first_appearance():
    vertices, faces, *_ = _crease(8)
    perm = np.random.default_rng(0).permutation(len(vertices))
    inverse = np.argsort(perm)
    ids = sp.segment_mesh(vertices[perm], inverse[faces], seg_min_verts=1)
    _, first = np.unique(ids, return_index=True)
    assert ids[0] == 0
    np.testing.assert_array_equal(np.argsort(first), np.arange(len(first)))  # id order = first index
    assert len(first) >= 3


def test_no_faces_and_unreferenced_vertices_are_singletons():
    vertices = np.random.default_rng(1).standard_normal((5, 3))
    np.testing.assert_array_equal(sp.segment_mesh(vertices, np.zeros((0, 3), np.int64)), np.arange(5))
    assert sp.segment_mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)).shape == (0,)
    plane_v, plane_f = _plane(4)
    ids = sp.segment_mesh(np.concatenate((plane_v, vertices)), plane_f)
    np.testing.assert_array_equal(ids, [0] * len(plane_v) + [1, 2, 3, 4, 5])


def test_degenerate_face_gives_no_nan_and_isolates_its_vertices_before_merging():
    vertices, faces = _plane(6)
    faces = np.concatenate((faces, [[0, 0, 1]]))  # zero area: vertices 0 and 1 get no normal
    _, _, w = sp._edge_weights(vertices.astype(F32), faces)
    assert not np.isnan(w).any() and np.isinf(w).sum() > 0
    np.testing.assert_array_equal(sp.segment_mesh(vertices, faces), np.zeros(len(vertices)))
    ids = sp.segment_mesh(vertices, faces, seg_min_verts=1)
    assert ids[0] != ids[1] and ids.max() + 1 == 3 and len(set(ids[2:].tolist())) == 1


@pytest.mark.parametrize("faces, match", [
    (np.array([[0, 1, 5]]), "face indices"),
    (np.array([[0, 1, -1]]), "face indices"),
    (np.array([[0, 1]]), r"\(F, 3\)"),
    (np.array([[0.0, 1.0, 2.0]]), "integer"),
])
def test_bad_faces_raise(faces, match):
    with pytest.raises(ValueError, match=match):
        sp.segment_mesh(np.zeros((3, 3)), faces)


# ---------------------------------------------------------------------------------------------
# Brute force: the official algorithm written per face / per edge in float32 scalars


def _brute_normals(vertices: np.ndarray, faces: np.ndarray) -> list[list]:
    normals = [[F32(0)] * 3 for _ in vertices]
    counts = [0] * len(vertices)
    with np.errstate(invalid="ignore", divide="ignore"):
        for face in faces:
            p1, p2, p3 = (vertices[i] for i in face)
            u, v = p2 - p1, p3 - p1
            c = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
            norm = np.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
            unit = [ci / norm for ci in c]
            for i in face:
                new = F32(1) / (F32(counts[i]) + F32(1))
                old = F32(1) - new
                normals[i] = [new * unit[d] + old * normals[i][d] for d in range(3)]
            for i in face:
                counts[i] += 1
    return normals


def _brute_weights(vertices: np.ndarray, faces: np.ndarray) -> tuple[list, list, list]:
    vertices = vertices.astype(F32)
    normals = _brute_normals(vertices, faces)
    a, b, w = [], [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i1, i2, i3 in faces:
            for p, q in ((i1, i2), (i1, i3), (i3, i2)):
                d = vertices[q] - vertices[p]
                length = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
                d = [d[0] / length, d[1] / length, d[2] / length]
                n1, n2 = normals[p], normals[q]
                weight = F32(1) - (n1[0] * n2[0] + n1[1] * n2[1] + n1[2] * n2[2])
                if n2[0] * d[0] + n2[1] * d[1] + n2[2] * d[2] > 0:
                    weight = weight * weight
                a.append(int(p))
                b.append(int(q))
                w.append(F32(weight))
    return a, b, w


def _brute_segment(vertices: np.ndarray, faces: np.ndarray, k: float, min_verts: int) -> np.ndarray:
    """Every edge (no de-duplication, no early stop, no pre-filter), stable order, float32."""
    a, b, w = _brute_weights(vertices, faces)
    w = [F32(np.inf) if np.isnan(x) else x for x in w]
    order = sorted(range(len(w)), key=lambda e: w[e])  # Python's sort is stable
    parent = list(range(len(vertices)))
    size = [1] * len(vertices)
    k = F32(k)
    thresh = [k] * len(vertices)

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    def join(x, y):
        parent[y] = x
        size[x] += size[y]

    for e in order:
        x, y = find(a[e]), find(b[e])
        if x != y and w[e] <= thresh[x] and w[e] <= thresh[y]:
            join(x, y)
            thresh[x] = F32(w[e] + k / F32(size[x]))
    for e in order:
        x, y = find(a[e]), find(b[e])
        if x != y and (size[x] < min_verts or size[y] < min_verts):
            join(x, y)
    return sp._first_appearance_ids(np.array([find(v) for v in range(len(vertices))]))


def _bumpy_grid(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vertices, faces = _plane(n)
    vertices[:, 2] = noise * rng.standard_normal(len(vertices)) + 0.2 * np.sin(4 * vertices[:, 0])
    return vertices, faces[rng.permutation(len(faces))]


def test_edge_weights_match_brute_force_bit_for_bit():
    rng = np.random.default_rng(2)
    vertices, faces = _bumpy_grid(6, 0.05, seed=3)
    vertices = np.concatenate((vertices, vertices[:2]))  # coincident vertices 49, 50 = 0, 1
    faces = np.concatenate((faces, rng.integers(0, len(vertices), (20, 3)), [[49, 1, 2], [3, 3, 4]]))
    a, b, w = sp._edge_weights(vertices.astype(F32), faces)
    ref_a, ref_b, ref_w = _brute_weights(vertices, faces)
    np.testing.assert_array_equal(a, ref_a)
    np.testing.assert_array_equal(b, ref_b)
    ref_w = np.array(ref_w, dtype=F32)
    assert np.isnan(ref_w).any(), "the case must exercise a zero-area face"
    np.testing.assert_array_equal(np.isinf(w), np.isnan(ref_w) | np.isinf(ref_w))
    finite = np.isfinite(ref_w)
    mismatch = np.flatnonzero(w[finite].view(np.uint32) != ref_w[finite].view(np.uint32))
    assert mismatch.size == 0, f"first mismatching edge {np.flatnonzero(finite)[mismatch[0]]}"


def test_convexity_squares_the_weight():
    # A roof ridge (convex) and a valley (concave) with the same slopes. For an edge from a slope
    # vertex a to a ridge-line vertex b, n_b = (0, 0, 1) and p_b - p_a points up on the ridge
    # (squared) and down in the valley (not squared); 1 - n_a·n_b is the same in both.
    vertices, faces = _plane(4)
    ridge, valley = vertices.copy(), vertices.copy()
    ridge[:, 2] = -0.5 * np.abs(vertices[:, 0] - 0.5)
    valley[:, 2] = 0.5 * np.abs(vertices[:, 0] - 0.5)
    a, b, w_ridge = sp._edge_weights(ridge.astype(F32), faces)
    _, _, w_valley = sp._edge_weights(valley.astype(F32), faces)
    on_line = vertices[:, 0] == 0.5
    into_line = on_line[b] & ~on_line[a]
    assert into_line.sum() >= 4 and np.all(w_valley[into_line] > 0.05)
    np.testing.assert_allclose(w_ridge[into_line], w_valley[into_line] ** 2, rtol=1e-5)


@pytest.mark.parametrize("seed, noise, k, min_verts", [
    (0, 0.01, 0.01, 20), (1, 0.02, 0.01, 5), (2, 0.005, 0.05, 1), (3, 0.03, 0.002, 8), (4, 0.0, 0.01, 20),
])
def test_segmentation_matches_brute_force(seed, noise, k, min_verts):
    vertices, faces = _bumpy_grid(14, noise, seed)
    # Extra triangles between random vertices: non-manifold edges, large weights, and duplicates.
    rng = np.random.default_rng(seed)
    faces = np.concatenate((faces, rng.integers(0, len(vertices), (10, 3)), faces[:15]))
    expected = _brute_segment(vertices, faces, k, min_verts)
    assert expected.max() > 0
    np.testing.assert_array_equal(sp.segment_mesh(vertices, faces, k, min_verts), expected)


@pytest.mark.parametrize("n, min_verts", [(3, 20), (5, 4), (6, 9)])
def test_segmentation_with_tied_weights_matches_brute_force(n, min_verts):
    # Planes meeting at creases: many exactly equal weights, so the tie order (edge order) matters.
    vertices, faces, *_ = _crease(n)
    shifted = vertices[:, [2, 1, 0]] + [1.0, 0.0, 0.0]  # a second wall at x = 1, mirrored
    faces = np.concatenate((faces, faces[:, ::-1] + len(vertices), [[0, len(vertices), 1]]))
    vertices = np.concatenate((vertices, shifted))
    expected = _brute_segment(vertices, faces, 0.01, min_verts)
    np.testing.assert_array_equal(sp.segment_mesh(vertices, faces, 0.01, min_verts), expected)


def test_edges_sort_stably_and_keep_the_first_of_each_pair():
    a = np.array([0, 1, 4, 3, 1, 4, 5, 2])
    b = np.array([1, 2, 5, 0, 0, 4, 6, 3])
    w = np.array([0.5, 0.1, 0.0, -0.0, 0.2, 0.0, -1e-7, 0.5], F32)
    sa, sb, sw = sp._sorted_unique_edges(7, a, b, w)
    # -1e-7 < 0.0 == -0.0 (edge order) < 0.1 < 0.2 < 0.5 == 0.5; the pair 1-0 at 0.2 comes first,
    # so 0-1 at 0.5 is dropped; the self-loop 4-4 is dropped.
    np.testing.assert_array_equal(sa, [5, 4, 3, 1, 1, 2])
    np.testing.assert_array_equal(sb, [6, 5, 0, 2, 0, 3])
    np.testing.assert_array_equal(sw, np.array([-1e-7, 0.0, 0.0, 0.1, 0.2, 0.5], F32))


def test_brute_force_cases_exercise_small_merging():
    vertices, faces = _bumpy_grid(14, 0.02, 1)
    without = _brute_segment(vertices, faces, 0.01, 1)
    with_merge = _brute_segment(vertices, faces, 0.01, 5)
    assert with_merge.max() < without.max()
    np.testing.assert_array_equal(sp.segment_mesh(vertices, faces, 0.01, 1), without)


# ---------------------------------------------------------------------------------------------
# segs.json and the source order


def _write_segs(path: Path, seg: list) -> Path:
    path.write_text(json.dumps({"params": {"kThresh": "0.01"}, "sceneId": "scene", "segIndices": seg}))
    return path


def test_segs_json_path_is_beside_the_ply():
    ply = Path("/data/scans/scene0011_00/scene0011_00_vh_clean_2.ply")
    assert sp.segs_json_path(ply) == ply.parent / "scene0011_00_vh_clean_2.0.010000.segs.json"
    assert sp.segs_json_path(Path("a/b.PLY")) == Path("a/b.0.010000.segs.json")


def test_segs_json_round_trip(tmp_path):
    seg = [7, 7, 3, 3, 3, 0]
    ids = sp.load_segs_json(_write_segs(tmp_path / "s.json", seg), 6)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, seg)


@pytest.mark.parametrize("content, match", [
    ('{"segIndices": [1, 2', "cannot read segments file"),
    ("[1, 2, 3]", "no 'segIndices'"),
    ('{"segIndices": [1, 2]}', "2 entries but the mesh has 3 vertices"),
    ('{"segIndices": [1, 2.5, 3]}', "non-integer"),
    ('{"segIndices": [1, true, 3]}', "non-integer"),
    ('{"segIndices": "123"}', "not a list"),
])
def test_bad_segs_json_raises_one_line(tmp_path, content, match):
    path = tmp_path / "bad.segs.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        sp.load_segs_json(path, 3)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_missing_segs_json_raises(tmp_path):
    with pytest.raises(ValueError, match="cannot read segments file"):
        sp.load_segs_json(tmp_path / "absent.json", 3)


def test_source_none_without_faces(tmp_path):
    ply = tmp_path / "scene_vh_clean_2.ply"
    vertices = np.zeros((4, 3))
    assert sp.superpoints_for_scene(ply, vertices, None) == (None, "none")
    assert sp.superpoints_for_scene(ply, vertices, np.zeros((0, 3), np.int64)) == (None, "none")


def test_source_mesh_segmentator(tmp_path):
    vertices, faces, *_ = _crease(8)
    ids, source = sp.superpoints_for_scene(tmp_path / "scene_vh_clean_2.ply", vertices, faces)
    assert source == "mesh segmentator"
    np.testing.assert_array_equal(ids, sp.segment_mesh(vertices, faces))


def test_segs_json_takes_precedence_over_the_mesh(tmp_path):
    vertices, faces, *_ = _crease(8)
    ply = tmp_path / "scene_vh_clean_2.ply"
    seg = (np.arange(len(vertices)) % 5).tolist()
    _write_segs(sp.segs_json_path(ply), seg)
    ids, source = sp.superpoints_for_scene(ply, vertices, faces)
    assert source == "segs.json"
    np.testing.assert_array_equal(ids, seg)
    ids, source = sp.superpoints_for_scene(ply, vertices, None)  # also without faces
    assert source == "segs.json"


def test_bad_segs_json_beside_the_ply_is_an_error_not_a_fallback(tmp_path):
    vertices, faces, *_ = _crease(8)
    ply = tmp_path / "scene_vh_clean_2.ply"
    _write_segs(sp.segs_json_path(ply), [0, 1, 2])
    with pytest.raises(ValueError, match="entries but the mesh has"):
        sp.superpoints_for_scene(ply, vertices, faces)


@pytest.mark.parametrize("offset", [1e6, 1e7])
def test_georeferenced_offset_gives_the_partition_at_the_origin(offset):
    """Far meshes are centred in float64 before the float32 segmentator (uncentred float32 at +1e6
    made 3.7 % of the edge weights non-finite on this mesh, all of them at +1e7)."""
    from engine.synthetic import generate_scene

    scene = generate_scene(2000, seed=4)
    vertices = scene.vertices_m.astype(np.float64)
    at_origin = sp.segment_mesh(vertices, scene.faces)
    assert len(np.unique(at_origin)) > 20
    np.testing.assert_array_equal(sp.segment_mesh(vertices + offset, scene.faces), at_origin)
