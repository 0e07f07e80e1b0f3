"""Reading scans (engine/scene_io.py): formats, aliases, triangulation, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from engine.readers import ply as ply_reader
from engine.scene_io import Scene, SceneInputError, read_scene, scene_name

VERTEX_DTYPE = [
    ("x", "f4"), ("y", "f4"), ("z", "f4"),
    ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1"),
]


def _vertices(n: int, seed: int = 0, dtype=VERTEX_DTYPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.empty(n, dtype=dtype)
    for name in ("x", "y", "z"):
        if name in v.dtype.names:
            v[name] = rng.normal(size=n) * 3.0
    for name in ("red", "green", "blue", "alpha"):
        if name in v.dtype.names:
            v[name] = rng.integers(0, 256, size=n)
    return v


def _faces(rows, name: str = "vertex_indices") -> np.ndarray:
    rows = [np.asarray(r, dtype=np.int32) for r in rows]
    if len({len(r) for r in rows}) <= 1:
        f = np.empty(len(rows), dtype=[(name, "i4", (len(rows[0]) if rows else 3,))])
        if rows:
            f[name] = np.stack(rows)
        return f
    f = np.empty(len(rows), dtype=[(name, object)])
    f[name] = rows
    return f


def _write(path: Path, vertex: np.ndarray | None, face: np.ndarray | None = None, *, text=False,
           byte_order="<") -> Path:
    elements = []
    if vertex is not None:
        elements.append(PlyElement.describe(vertex, "vertex"))
    if face is not None:
        elements.append(PlyElement.describe(face, "face", len_types={face.dtype.names[0]: "u1"}))
    PlyData(elements, text=text, byte_order=byte_order).write(str(path))
    return path


def _assert_one_line_error(path: Path, *fragments: str) -> SceneInputError:
    with pytest.raises(SceneInputError) as info:
        read_scene(path)
    message = str(info.value)
    assert "\n" not in message, f"message spans lines: {message!r}"
    assert str(path) in message, f"message does not name the file: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, ValueError)
    return info.value


# ---------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize(
    "text, byte_order", [(False, "<"), (False, ">"), (True, "=")], ids=["binary-le", "binary-be", "ascii"]
)
def test_formats_read_back_exactly(tmp_path, text, byte_order):
    v = _vertices(57)
    f = _faces(np.random.default_rng(1).integers(0, 57, size=(40, 3)))
    scene = read_scene(_write(tmp_path / "scene0011_00_vh_clean_2.ply", v, f, text=text,
                              byte_order=byte_order))
    assert isinstance(scene, Scene)
    assert scene.name == "scene0011_00"
    assert scene.xyz.dtype == np.float64 and scene.xyz.shape == (57, 3)
    assert scene.rgb.dtype == np.uint8 and scene.rgb.shape == (57, 3)
    assert scene.faces is not None and scene.faces.dtype == np.int64 and scene.faces.shape == (40, 3)
    np.testing.assert_array_equal(scene.xyz, np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64))
    np.testing.assert_array_equal(scene.rgb, np.stack([v["red"], v["green"], v["blue"]], 1))
    np.testing.assert_array_equal(scene.faces, f["vertex_indices"])


def test_ascii_and_binary_equal(tmp_path):
    v = _vertices(31, seed=5, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"),
                                     ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    f = _faces(np.random.default_rng(2).integers(0, 31, size=(12, 3)))
    a = read_scene(_write(tmp_path / "a.ply", v, f, text=True))
    b = read_scene(_write(tmp_path / "b.ply", v, f, text=False))
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.faces, b.faces)


def test_vertex_index_alias(tmp_path):
    v = _vertices(10)
    rows = [[0, 1, 2], [2, 3, 9]]
    for text in (False, True):
        scene = read_scene(_write(tmp_path / f"alias{text}.ply", v, _faces(rows, "vertex_index"), text=text))
        np.testing.assert_array_equal(scene.faces, rows)


def test_no_faces_is_none(tmp_path):
    assert read_scene(_write(tmp_path / "cloud.ply", _vertices(5))).faces is None
    empty_faces = np.empty(0, dtype=[("vertex_indices", "i4", (3,))])
    assert read_scene(_write(tmp_path / "zero_faces.ply", _vertices(5), empty_faces)).faces is None


@pytest.mark.parametrize("text", [False, True], ids=["binary", "ascii"])
def test_polygons_are_fan_triangulated_in_order(tmp_path, text):
    rows = [[0, 1, 2, 3], [4, 5, 6], [7, 8], [1, 3, 5, 7, 9]]
    scene = read_scene(_write(tmp_path / "poly.ply", _vertices(10), _faces(rows), text=text))
    expected = [[0, 1, 2], [0, 2, 3], [4, 5, 6], [1, 3, 5], [1, 5, 7], [1, 7, 9]]
    np.testing.assert_array_equal(scene.faces, expected)


def test_other_integer_colour_types_and_extra_properties(tmp_path):
    dtype = [("nx", "f4"), ("x", "f8"), ("y", "f8"), ("z", "f8"), ("red", "u2"), ("green", "i4"),
             ("blue", "u1"), ("label", "i4")]
    v = _vertices(8, dtype=dtype)
    v["red"], v["green"] = 255, 0
    scene = read_scene(_write(tmp_path / "extra.ply", v))
    assert (scene.rgb[:, 0] == 255).all() and (scene.rgb[:, 1] == 0).all()


@pytest.mark.parametrize(
    "path, name",
    [
        ("scene0011_00_vh_clean_2.ply", "scene0011_00"),
        ("data/scans/scene0707_00_vh_clean_2.ply", "scene0707_00"),
        ("foo.ply", "foo"),
        ("FOO.PLY", "FOO"),
        ("room.v2.ply", "room.v2"),
        ("_vh_clean_2.ply", "_vh_clean_2"),
        ("noext", "noext"),
    ],
)
def test_scene_name(path, name):
    assert scene_name(Path(path)) == name
    assert scene_name(path) == name


def test_module_imports_neither_torch_nor_matplotlib():
    code = ("import sys, engine.scene_io, engine.outputs; "
            "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming the file and the problem


def test_missing_file(tmp_path):
    _assert_one_line_error(tmp_path / "nope.ply", "not found")


def test_directory(tmp_path):
    (tmp_path / "dir.ply").mkdir()
    _assert_one_line_error(tmp_path / "dir.ply", "directory")


def test_empty_file(tmp_path):
    (tmp_path / "empty.ply").write_bytes(b"")
    _assert_one_line_error(tmp_path / "empty.ply", "empty")


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.ply"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_one_line_error(path, "not a valid PLY", "binary bytes")


def test_text_that_is_not_ply(tmp_path):
    path = tmp_path / "notes.ply"
    path.write_text("solid cube\nfacet normal 0 0 1\n")
    _assert_one_line_error(path, "not a valid PLY")


def test_bad_header_line(tmp_path):
    path = tmp_path / "header.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex many\nend_header\n")
    _assert_one_line_error(path, "not a valid PLY")


@pytest.mark.parametrize("keep_fraction", [0.3, 0.9, 0.999], ids=["in-vertices", "in-faces", "last-bytes"])
def test_truncated_binary(tmp_path, keep_fraction):
    full = _write(tmp_path / "full.ply", _vertices(200), _faces(np.zeros((300, 3), int)))
    data = full.read_bytes()
    path = tmp_path / "trunc.ply"
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    _assert_one_line_error(path, "not a valid PLY", "end-of-file")


def test_truncated_polygon_binary(tmp_path):
    # variable-length faces take plyfile's row-by-row path: truncation must be caught there too
    full = _write(tmp_path / "full.ply", _vertices(20), _faces([[0, 1, 2, 3]] * 20 + [[0, 1, 2]]))
    path = tmp_path / "trunc.ply"
    path.write_bytes(full.read_bytes()[:-7])
    _assert_one_line_error(path, "not a valid PLY")


def test_truncated_ascii(tmp_path):
    full = _write(tmp_path / "full.ply", _vertices(20), text=True)
    lines = full.read_text().splitlines(keepends=True)
    path = tmp_path / "trunc.ply"
    path.write_text("".join(lines[:-5]))
    _assert_one_line_error(path, "not a valid PLY", "end-of-file")


def test_malformed_ascii_value(tmp_path):
    full = _write(tmp_path / "full.ply", _vertices(4), text=True)
    lines = full.read_text().splitlines(keepends=True)
    lines[-2] = "1.0 abc 2.0 1 2 3 4\n"
    path = tmp_path / "bad.ply"
    path.write_text("".join(lines))
    _assert_one_line_error(path, "not a valid PLY")


def test_non_ascii_in_ascii_body(tmp_path):
    path = tmp_path / "latin.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n\xe9\xff\n")
    _assert_one_line_error(path, "not a valid PLY", "binary bytes")


def test_no_vertex_element(tmp_path):
    path = _write(tmp_path / "novertex.ply", None, _faces([[0, 1, 2]]))
    _assert_one_line_error(path, "no 'vertex' element", "face")


def test_zero_vertices(tmp_path):
    _assert_one_line_error(_write(tmp_path / "zero.ply", _vertices(0)), "zero vertices")


@pytest.mark.parametrize("missing", ["x", "z"])
def test_missing_coordinate(tmp_path, missing):
    dtype = [d for d in VERTEX_DTYPE if d[0] != missing]
    _assert_one_line_error(_write(tmp_path / "noxyz.ply", _vertices(5, dtype=dtype)),
                           "coordinates missing", missing)


def test_partly_missing_colours(tmp_path):
    dtype = [d for d in VERTEX_DTYPE if d[0] not in ("green", "blue")]
    error = _assert_one_line_error(_write(tmp_path / "nocolour.ply", _vertices(5, dtype=dtype)),
                                   "colours missing", "green blue")
    assert "red" not in error.problem.split("(")[0]


@pytest.mark.parametrize("values, colour_max, expected", [
    ([[0.0, 0.5, 1.0]], None, [[0, 128, 255]]),  # in 0..1 with a fraction: 0..1
    ([[0.0, 2.0, 255.0]], None, [[0, 2, 255]]),  # above 1: 0..255
    ([[0.0, 1.0, 1.0]], 1, [[0, 255, 255]]),  # only 0 and 1: stated
    ([[0.0, 1.0, 1.0]], 255, [[0, 1, 1]]),
], ids=["unit", "byte", "stated-1", "stated-255"])
def test_float_colours_by_the_rule(tmp_path, values, colour_max, expected):
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "f4"), ("green", "f4"), ("blue", "f4")]
    v = _vertices(1, dtype=dtype)
    v["red"], v["green"], v["blue"] = np.asarray(values, dtype=np.float32).T
    scene = read_scene(_write(tmp_path / "floatrgb.ply", v), colour_max=colour_max)
    np.testing.assert_array_equal(scene.rgb, expected)


def test_float_colours_only_zero_and_one_need_the_scale(tmp_path):
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "f4"), ("green", "f4"), ("blue", "f4")]
    v = _vertices(3, dtype=dtype)
    v["red"], v["green"], v["blue"] = 1.0, 0.0, 1.0
    _assert_one_line_error(_write(tmp_path / "binary.ply", v), "only 0 and 1", "--colour-max")
    v["red"][0] = 300.0
    _assert_one_line_error(_write(tmp_path / "big.ply", v), "outside 0..255")


def test_colour_out_of_range(tmp_path):
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "i2"), ("green", "u1"), ("blue", "u1")]
    v = _vertices(5, dtype=dtype)
    v["red"][2] = 300
    _assert_one_line_error(_write(tmp_path / "rgb300.ply", v), "colours outside 0..255", "300")


def test_nan_coordinates_counted(tmp_path):
    v = _vertices(10)
    v["x"][[1, 4]] = np.nan
    v["z"][4] = np.nan
    _assert_one_line_error(_write(tmp_path / "nan.ply", v), "2 of 10 vertices", "NaN")


def test_inf_coordinates_counted(tmp_path):
    v = _vertices(10)
    v["y"][[0, 3, 7]] = [np.inf, -np.inf, np.inf]
    v["x"][9] = np.nan
    _assert_one_line_error(_write(tmp_path / "inf.ply", v), "4 of 10 vertices", "3 with infinity",
                           "1 with NaN")


@pytest.mark.parametrize("bad_index", [10, -1, 2**31 - 1])
@pytest.mark.parametrize("text", [False, True], ids=["binary", "ascii"])
def test_face_index_out_of_range(tmp_path, bad_index, text):
    path = _write(tmp_path / "faces.ply", _vertices(10), _faces([[0, 1, 2], [3, bad_index, 4]]), text=text)
    _assert_one_line_error(path, "1 of 2 faces", "outside 0..9")


def test_face_element_without_index_list(tmp_path):
    face = np.zeros(2, dtype=[("flags", "i4")])
    path = tmp_path / "noindex.ply"
    PlyData([PlyElement.describe(_vertices(4), "vertex"), PlyElement.describe(face, "face")]).write(str(path))
    _assert_one_line_error(path, "vertex_indices", "flags")


def test_unreadable_file(tmp_path, monkeypatch):
    # chmod 000 does not stop root, so simulate the OS refusing the open
    path = _write(tmp_path / "locked.ply", _vertices(3))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ply_reader, "open", refuse, raising=False)
    _assert_one_line_error(path, "cannot read", "Permission denied")


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_header_declares_absurd_vertex_count(tmp_path, fmt):
    path = tmp_path / "huge.ply"
    header = (f"ply\nformat {fmt} 1.0\nelement vertex 100000000000000\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    path.write_bytes(header.encode() + b"0 0 0 1 2 3\n")
    _assert_one_line_error(path, "not a valid PLY")
