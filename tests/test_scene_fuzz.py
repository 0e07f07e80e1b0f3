"""Property-based fuzzing of scene reading (hypothesis): mutated headers and bodies of small PLY and
PCD files give a valid Scene or one SceneInputError line naming the file; never another exception,
a multi-line message or a hang (each example has a deadline)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plyfile import PlyData, PlyElement
from pypcd4 import Encoding, PointCloud

from engine.scene_io import Scene, SceneInputError, read_scene


def _base_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    vertex = np.empty(6, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                ("blue", "u1")])
    for name in ("x", "y", "z"):
        vertex[name] = rng.uniform(0, 3, 6)
    for name in ("red", "green", "blue"):
        vertex[name] = rng.integers(0, 256, 6)
    face = np.empty(3, dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = [[0, 1, 2], [2, 3, 4], [3, 4, 5]]
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for suffix, text, order in (("le.ply", False, "<"), ("be.ply", False, ">"), ("ascii.ply", True, "=")):
            path = Path(folder) / suffix
            PlyData([PlyElement.describe(vertex, "vertex"),
                     PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})],
                    text=text, byte_order=order).write(str(path))
            files[suffix] = path.read_bytes()
        xyz = np.column_stack([vertex["x"], vertex["y"], vertex["z"]])
        for suffix, encoding in (("bin.pcd", Encoding.BINARY), ("ascii.pcd", Encoding.ASCII)):
            path = Path(folder) / suffix
            PointCloud.from_xyz_points(xyz).save(path, encoding=encoding)
            files[suffix] = path.read_bytes()
    return files


BASE = _base_files()
HEADER_WORDS = ["float", "double", "uchar", "int", "list", "uint", "char", "vertex", "face", "0", "1", "-1", "3",
                "99999999999", "x", "red", "vertex_indices", "ascii", "binary_big_endian", "F", "U", "I", "4", "8",
                "binary_compressed", "nan", ""]


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(BASE)))
    data = bytearray(BASE[name])
    header_end = data.find(b"end_header\n") + len(b"end_header\n") if name.endswith(".ply") else \
        data.find(b"\n", data.find(b"DATA")) + 1
    kind = draw(st.sampled_from(["header-word", "body-bytes", "truncate", "header-bytes"]))
    if kind == "header-word":
        header = data[:header_end].decode("ascii")
        words = list(re.finditer(r"[^\s]+", header))
        target = draw(st.sampled_from(words))
        replacement = draw(st.sampled_from(HEADER_WORDS))
        data = bytearray((header[:target.start()] + replacement + header[target.end():]).encode()) + data[header_end:]
    elif kind == "body-bytes" and len(data) > header_end:
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(header_end, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    else:
        position = draw(st.integers(0, max(header_end - 1, 0)))
        data[position] = draw(st.integers(0, 255))
    return name, bytes(data)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated())
def test_mutated_files_read_or_fail_in_one_line(case):
    name, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz_{name}"
        path.write_bytes(data)
        try:
            scene = read_scene(path)
        except SceneInputError as error:
            message = str(error)
            assert "\n" not in message and str(path) in message, message
            return
        assert isinstance(scene, Scene)
        assert scene.xyz.shape == (scene.num_points, 3) and np.isfinite(scene.xyz).all()
        assert scene.rgb.shape == scene.xyz.shape and scene.rgb.dtype == np.uint8
        if scene.faces is not None:
            assert scene.faces.min() >= 0 and scene.faces.max() < scene.num_points
