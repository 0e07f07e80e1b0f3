"""Scan readers (engine/readers/) behind read_scene: each format on small files written here, colour
rules, --up-axis / --units, and the plausibility and precision warnings."""

from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
import pytest
from plyfile import PlyData, PlyElement
from pypcd4 import Encoding, PointCloud

from engine.readers import EXTENSIONS
from engine.scene_io import NEUTRAL_RGB, SceneInputError, read_scene, safe_scene_name, scene_name

RNG = np.random.default_rng(7)
XYZ = np.round(RNG.uniform([0, 0, 0], [6, 5, 2.8], size=(40, 3)), 3)  # (40, 3) float64, a room in metres
RGB = RNG.integers(0, 256, size=(40, 3)).astype(np.uint8)


def _one_line_error(path: Path, *fragments: str, **options) -> str:
    with pytest.raises(SceneInputError) as info:
        read_scene(path, **options)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def _ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, *, text=False, byte_order="<", coord="f8") -> Path:
    fields = [("x", coord), ("y", coord), ("z", coord)]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(xyz), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    if rgb is not None:
        vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    PlyData([PlyElement.describe(vertex, "vertex")], text=text, byte_order=byte_order).write(str(path))
    return path


def _pcd(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, encoding: Encoding) -> Path:
    if rgb is None:
        cloud = PointCloud.from_xyz_points(xyz.astype(np.float32))
    else:  # rgb packed in a uint32 word (ASCII keeps it exactly; a packed float would print as ~0)
        packed = PointCloud.encode_rgb(rgb).view(np.uint32)
        cloud = PointCloud.from_points([xyz[:, 0].astype(np.float32), xyz[:, 1].astype(np.float32),
                                        xyz[:, 2].astype(np.float32), packed],
                                       ("x", "y", "z", "rgb"), (np.float32, np.float32, np.float32, np.uint32))
    cloud.save(path, encoding=encoding)
    return path


def _las(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, offset=(0.0, 0.0, 0.0)) -> Path:
    header = laspy.LasHeader(point_format=3 if rgb is not None else 1, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.asarray(offset)
    las = laspy.LasData(header)
    las.x, las.y, las.z = (xyz + np.asarray(offset)).T
    if rgb is not None:
        las.red, las.green, las.blue = (rgb.astype(np.uint16) * 257).T  # the specification's 16-bit scale
    las.write(path)
    return path


# ---------------------------------------------------------------------------------------------
# Each format


@pytest.mark.parametrize("text, byte_order", [(False, ">"), (False, "<"), (True, "=")],
                         ids=["binary-big-endian", "binary-little-endian", "ascii"])
def test_ply(tmp_path, text, byte_order):
    scene = read_scene(_ply(tmp_path / "room.ply", XYZ, RGB, text=text, byte_order=byte_order))
    np.testing.assert_array_equal(scene.xyz, XYZ)
    np.testing.assert_array_equal(scene.rgb, RGB)
    assert scene.has_colour and scene.warnings == [] and scene.faces is None


@pytest.mark.parametrize("encoding", [Encoding.BINARY, Encoding.ASCII, Encoding.BINARY_COMPRESSED])
def test_pcd(tmp_path, encoding):
    scene = read_scene(_pcd(tmp_path / "room.pcd", XYZ, RGB, encoding))
    np.testing.assert_array_equal(scene.xyz, XYZ.astype(np.float32))
    np.testing.assert_array_equal(scene.rgb, RGB)
    assert scene.name == "room" and scene.warnings == []


def test_pcd_packed_float_rgb(tmp_path):
    xyz = XYZ.astype(np.float32)
    cloud = PointCloud.from_xyzrgb_points(np.column_stack((xyz, PointCloud.encode_rgb(RGB))))
    cloud.save(tmp_path / "f.pcd", encoding=Encoding.BINARY)
    np.testing.assert_array_equal(read_scene(tmp_path / "f.pcd").rgb, RGB)


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las(tmp_path, suffix):
    scene = read_scene(_las(tmp_path / f"room{suffix}", XYZ, RGB))
    np.testing.assert_allclose(scene.xyz, XYZ, atol=1e-9)
    np.testing.assert_array_equal(scene.rgb, RGB)


def test_las_eight_bit_colours_and_georeferenced_offset(tmp_path):
    path = _las(tmp_path / "geo.las", XYZ, None, offset=(5e6, 4e6, 100.0))
    las = laspy.read(path)
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales, header.offsets = las.header.scales, las.header.offsets
    out = laspy.LasData(header)
    out.x, out.y, out.z = las.x, las.y, las.z
    out.red, out.green, out.blue = RGB.astype(np.uint16).T  # 0..255 in 16-bit fields, as many writers do
    out.write(tmp_path / "geo8.las")
    scene = read_scene(tmp_path / "geo8.las")
    np.testing.assert_array_equal(scene.rgb, RGB)
    np.testing.assert_allclose(scene.xyz - [5e6, 4e6, 100.0], XYZ, atol=1e-6)
    assert not any("precision" in w for w in scene.warnings)


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", np.column_stack((XYZ, RGB)))  # (N, 6) float64, colours 0..255
    np.save(tmp_path / "b.npy", np.column_stack((XYZ, RGB / 255.0)))  # colours 0..1 (fractions: detected)
    np.savez(tmp_path / "c.npz", xyz=XYZ.astype(np.float32), rgb=RGB)
    np.savez(tmp_path / "d.npz", points=np.column_stack((XYZ, RGB)))
    for name in ("a.npy", "b.npy", "c.npz", "d.npz"):
        scene = read_scene(tmp_path / name)
        np.testing.assert_allclose(scene.xyz, XYZ, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(scene.rgb, RGB, err_msg=name)


def test_no_colour_is_neutral_grey_with_one_warning(tmp_path):
    np.save(tmp_path / "xyz.npy", XYZ)
    for path in (tmp_path / "xyz.npy", _ply(tmp_path / "xyz.ply", XYZ, None),
                 _pcd(tmp_path / "xyz.pcd", XYZ, None, Encoding.BINARY), _las(tmp_path / "xyz.las", XYZ, None)):
        scene = read_scene(path)
        assert not scene.has_colour and (scene.rgb == NEUTRAL_RGB).all(), path
        assert len(scene.warnings) == 1 and "no colour" in scene.warnings[0] and "\n" not in scene.warnings[0]


# ---------------------------------------------------------------------------------------------
# Up axis, units, warnings


@pytest.mark.parametrize("up_axis, to_file", [
    ("y", lambda p: np.column_stack((p[:, 0], p[:, 2], -p[:, 1]))),
    ("-y", lambda p: np.column_stack((p[:, 0], -p[:, 2], p[:, 1]))),
    ("x", lambda p: np.column_stack((p[:, 2], p[:, 1], -p[:, 0]))),
])
def test_up_axis_turns_back_exactly(tmp_path, up_axis, to_file):
    np.save(tmp_path / "turned.npy", to_file(XYZ))
    scene = read_scene(tmp_path / "turned.npy", up_axis=up_axis)
    np.testing.assert_array_equal(scene.xyz, XYZ)


def test_units(tmp_path):
    np.save(tmp_path / "mm.npy", XYZ * 1000)
    np.testing.assert_allclose(read_scene(tmp_path / "mm.npy", units="mm").xyz, XYZ, rtol=1e-12)
    np.save(tmp_path / "cm.npy", XYZ * 100)
    np.testing.assert_allclose(read_scene(tmp_path / "cm.npy", units="cm").xyz, XYZ, rtol=1e-12)


@pytest.mark.parametrize("scale, turn, options, needle", [
    (1000, False, {}, "--units m right"),  # mm read as metres: 6 km across
    (0.01, False, {}, "small"),  # read as m but 100x too small
    (1, True, {}, "--up-axis z right"),  # y-up phone scan read as z-up: much taller than wide
])
def test_implausible_room_warns(tmp_path, scale, turn, options, needle):
    xyz = XYZ * scale
    if turn:  # 0.6 m wide, 5.6 m tall
        xyz = np.column_stack((XYZ[:, 0] * 0.1, XYZ[:, 1] * 0.1, XYZ[:, 2] * 2))
    np.save(tmp_path / "odd.npy", xyz)
    warnings = [w for w in read_scene(tmp_path / "odd.npy", **options).warnings if "colour" not in w]
    assert len(warnings) == 1 and needle in warnings[0], warnings


def test_float32_far_from_the_origin_warns_about_lost_precision(tmp_path):
    far = XYZ + 1e7
    scene = read_scene(_ply(tmp_path / "f32.ply", far, RGB, coord="f4"))
    assert any("precision was lost" in w and "float32" in w for w in scene.warnings), scene.warnings
    assert read_scene(_ply(tmp_path / "f64.ply", far, RGB, coord="f8")).warnings == []
    assert read_scene(_ply(tmp_path / "near.ply", XYZ + 1000, RGB, coord="f4")).warnings == []


# ---------------------------------------------------------------------------------------------
# Names and bad files


@pytest.mark.parametrize("path, name", [("a/scene0001_00_vh_clean_2.ply", "scene0001_00"), ("lidar.LAZ", "lidar"),
                                        ("x.pcd", "x"), ("cloud.npz", "cloud"), ("r.v2.npy", "r.v2")])
def test_scene_name_every_format(path, name):
    assert scene_name(path) == name
    assert set(EXTENSIONS) == {".ply", ".pcd", ".las", ".laz", ".npy", ".npz"}


@pytest.mark.parametrize("path, name", [(".hidden.ply", "hidden"), ("my room.ply", "my_room"),
                                        ("tab\troom.npy", "tab_room"), ("ok-1.2_x.ply", "ok-1.2_x")])
def test_safe_scene_name(path, name):
    safe, note = safe_scene_name(path)
    assert safe == name and (note is None) == (path == "ok-1.2_x.ply")


def test_empty_scene_name_is_refused():
    with pytest.raises(SceneInputError, match="no scene name"):
        safe_scene_name(".ply")


def test_unknown_extension(tmp_path):
    (tmp_path / "scan.obj").write_text("v 0 0 0\n")
    _one_line_error(tmp_path / "scan.obj", "unknown scan format", ".ply")


@pytest.mark.parametrize("make, needle", [
    (lambda p: np.save(p / "s.npy", np.zeros((5, 4))), "(N, 3)"),
    (lambda p: np.save(p / "s.npy", np.array([{"a": 1}])), "not a valid NumPy"),
    (lambda p: np.save(p / "s.npy", np.zeros((0, 3))), "zero points"),
    (lambda p: np.save(p / "s.npy", np.full((3, 3), np.nan)), "NaN"),
    (lambda p: np.savez(p / "s.npz", a=np.zeros((3, 3)), b=np.zeros(3)), "found arrays: a, b"),
    (lambda p: np.savez(p / "s.npz", xyz=np.zeros((3, 3)), rgb=np.zeros((2, 3))), "'rgb' must have shape"),
    (lambda p: (p / "s.npz").write_bytes(b"PK\x03\x04broken"), "not a valid"),
    (lambda p: (p / "s.pcd").write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
                                         b"WIDTH 9\nHEIGHT 1\nPOINTS 9\nDATA binary\n" + bytes(20)), "not a valid PCD"),
    (lambda p: (p / "s.pcd").write_bytes(b"VERSION 0.7\nFIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
                                         b"WIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2 3\n"), "coordinates missing"),
    (lambda p: (p / "s.las").write_bytes(b"LASF" + bytes(300)), "not a valid LAS"),
], ids=["npy-4-columns", "npy-object", "npy-empty", "npy-nan", "npz-two-arrays", "npz-rgb-shape", "npz-broken",
        "pcd-truncated", "pcd-no-xyz", "las-garbage"])
def test_bad_files_are_one_line(tmp_path, make, needle):
    make(tmp_path)
    path = next(tmp_path.iterdir())
    _one_line_error(path, needle)


def _ply_faces_header(face_property: str) -> bytes:
    return ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
            f"element face 1\n{face_property}\nend_header\n0 0 0\n1 0 0\n0 1 0\n").encode()


def test_ply_face_index_not_a_list(tmp_path):
    path = tmp_path / "scalar.ply"
    path.write_bytes(_ply_faces_header("property uchar vertex_indices") + b"3\n")
    _one_line_error(path, "not a list")


def test_ply_face_indices_as_floats(tmp_path):
    path = tmp_path / "float.ply"
    path.write_bytes(_ply_faces_header("property list uchar float vertex_indices") + b"3 0.5 1.5 2.5\n")
    _one_line_error(path, "not integer vertex indices")
