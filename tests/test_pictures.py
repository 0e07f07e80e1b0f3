"""The pictures of a result (engine/pictures/): palette, the PNG quick look (legible: no two texts
overlap, the weights said) and the HTML viewer's content. The viewer in a real browser:
tests/test_viewer_browser.py."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from engine.pictures import png
from engine.pictures.caption import Caption
from engine.pictures.html import render_instances_html, viewer_figure
from engine.pictures.palette import UNASSIGNED_RGB, class_colors, instance_colors
from engine.pictures.png import UNASSIGNED_PNG_RGB, instances_figure, render_instances_png
from engine.pictures.summary import InstanceSummary
from tests.result_scenes import random_result, real_gt_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RANDOM = Caption("RANDOM WEIGHTS (seed 3): the instances are meaningless", random_weights=True,
                 backbone="native (oneDNN)", kernels="PyTorch (cpu)")
CHECKPOINT = Caption("checkpoint dknet_scannet.pth", backbone="native (oneDNN)", kernels="PyTorch (cpu)")


def _summary(masks, ids, scores) -> InstanceSummary:
    return InstanceSummary.of(masks, ids, scores)


def _texts(figure) -> list[tuple[str, object]]:
    """(text, pixel Bbox) of every text drawn: header, panel titles and axis labels, numbers, legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = list(figure.texts)
    for axes in figure.axes:
        texts += [*axes.texts, axes.title, axes.xaxis.label, axes.yaxis.label]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text().strip()]


def _overlaps(boxes: list[tuple[str, object]]) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes share any area."""
    found = []
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            one, two = boxes[a][1], boxes[b][1]
            if min(one.x1, two.x1) > max(one.x0, two.x0) and min(one.y1, two.y1) > max(one.y0, two.y0):
                found.append((boxes[a][0], boxes[b][0]))
    return found


# ---------------------------------------------------------------------------------------------
# Palette


def test_instance_colors():
    palette = instance_colors(1000)
    assert palette.shape == (1000, 3) and palette.dtype == np.uint8
    assert len(np.unique(palette, axis=0)) == 1000, "colours repeat"
    np.testing.assert_array_equal(instance_colors(7), palette[:7])  # stable prefix, deterministic
    spread = palette.astype(int).max(1) - palette.astype(int).min(1)
    assert spread.min() >= 60, "a colour is too close to grey"
    first = palette[:20].astype(float)
    distance = np.linalg.norm(first[:, None] - first[None], axis=2) + np.eye(20) * 1e9
    assert distance.min() > 30, "two of the first 20 colours are nearly equal"
    assert instance_colors(0).shape == (0, 3)
    assert not (palette == UNASSIGNED_RGB).all(1).any()
    assert len({tuple(c) for c in class_colors().values()}) == 20


# ---------------------------------------------------------------------------------------------
# PNG


def test_png_is_valid_and_shows_instance_colours(tmp_path):
    xyz, _, masks, ids, scores = random_result(num_points=3000, num_instances=3)
    path = render_instances_png(tmp_path / "x.png", xyz, _summary(masks, ids, scores), scene="scene", caption=RANDOM)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    for i, colour in enumerate(instance_colors(3)):
        assert tuple(colour) in colours, f"instance {i} colour {colour} not drawn"
    assert UNASSIGNED_PNG_RGB in colours


def test_png_deterministic_with_subsampling_and_empty(tmp_path):
    xyz, _, masks, ids, scores = random_result(num_points=5000, num_instances=2)
    summary = _summary(masks, ids, scores)
    a = render_instances_png(tmp_path / "a.png", xyz, summary, scene="s", max_points=1000).read_bytes()
    b = render_instances_png(tmp_path / "b.png", xyz, summary, scene="s", max_points=1000).read_bytes()
    assert a == b
    empty = _summary(np.zeros((0, 5000), bool), np.zeros(0, int), np.zeros(0))
    assert render_instances_png(tmp_path / "e.png", xyz, empty, scene="s").read_bytes()[:8] == PNG_MAGIC
    texts = [t for t, _ in _texts(instances_figure(xyz, empty, scene="s"))]
    assert "no instances" in texts and "s: 0 instances, 0 of 5,000 points assigned" in texts
    nothing = _summary(np.zeros((0, 0), bool), np.zeros(0, int), np.zeros(0))
    assert render_instances_png(tmp_path / "n.png", np.zeros((0, 3)), nothing, scene="s").is_file()
    one = _summary(np.ones((1, 1), bool), np.array([5]), np.array([0.5]))
    assert render_instances_png(tmp_path / "1.png", np.zeros((1, 3)), one, scene="s").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.png", "a.png", "b.png", "e.png", "n.png"]


def test_splat_nearest_point_wins():
    u = np.array([0.0, 0.0, 1.0, 1.0, 0.5])
    v = np.array([0.0, 0.0, 1.0, 1.0, 0.5])
    depth = np.array([2.0, 1.0, -1.0, 3.0, 0.0])  # points 0 and 1 share a pixel, as do 2 and 3
    colours = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0], [9, 9, 9], [1, 2, 3]], np.uint8)
    image, extent = png._splat(u, v, depth, colours, (100.0, 100.0))
    height, width, _ = image.shape
    assert image[0, 0].tolist() == [255, 0, 0], "the farther point covered the nearer one"
    assert image[height - 2, width - 2].tolist() == [9, 9, 9]
    assert extent[0] == 0.0 and extent[2] == 0.0 and extent[1] >= 1.0 and extent[3] >= 1.0
    assert (image == 255).all(axis=2).sum() > 0.9 * height * width  # background stays white


def test_png_of_the_real_scene_is_legible():
    """72 instances of the real ScanNet scene: no two texts overlap, every instance is in the
    legend, most are numbered on the map, and the header says which weights produced it."""
    xyz, masks, ids, scores = real_gt_result()
    summary = _summary(masks, ids, scores)
    assert summary.num_instances >= 70
    boxes = _texts(instances_figure(xyz, summary, scene="scene0000_01", caption=RANDOM))
    assert _overlaps(boxes) == []
    texts = [t for t, _ in boxes]
    for i in range(summary.num_instances):
        assert f"{summary.label(i)} ({summary.point_counts[i]:,})" in texts, f"instance {i} missing from the legend"
    numbers = {int(t) for t in texts if t.isdigit()}
    assert numbers <= set(range(summary.num_instances)) and len(numbers) >= 40, sorted(numbers)
    assert f"weights: {RANDOM.weights}" in texts and RANDOM.run_line() in texts


def test_png_numbers_only_what_fits_and_says_what_it_leaves_out():
    """400 instances in a small room: the legend lists the largest and counts the rest; still no
    overlap; a checkpoint's name is stated (not in red)."""
    xyz, _, masks, ids, scores = random_result(num_points=20_000, num_instances=400, seed=1)
    summary = _summary(masks, ids, scores)
    figure = instances_figure(xyz, summary, scene="crowded", caption=CHECKPOINT)
    boxes = _texts(figure)
    assert _overlaps(boxes) == []
    texts = [t for t, _ in boxes]
    more = [t for t in texts if t.endswith("smaller not listed")]
    listed = [t for t in texts if re.fullmatch(r"\d+ \S+ \d\.\d\d \([\d,]+\)", t)]
    assert len(more) == 1 and int(more[0].split()[1]) == summary.num_instances - len(listed)
    smallest_listed = min(int(t.rsplit("(", 1)[1].rstrip(")").replace(",", "")) for t in listed)
    unlisted = set(range(summary.num_instances)) - {int(t.split()[0]) for t in listed}
    assert all(summary.point_counts[i] <= smallest_listed for i in unlisted), "a larger instance was left out"
    header = next(t for t in figure.texts if t.get_text() == "weights: checkpoint dknet_scannet.pth")
    assert header.get_color() == "black"


# ---------------------------------------------------------------------------------------------
# HTML viewer (its content; the drawing: tests/test_viewer_browser.py)


def test_viewer_lists_every_instance_and_both_colourings(tmp_path):
    xyz, _, masks, ids, scores = random_result(num_points=3000, num_instances=5, seed=2)
    masks[4] = False  # an empty instance is still listed
    summary = _summary(masks, ids, scores)
    figure = viewer_figure(xyz, summary, scene="scene0011_00", caption=RANDOM)
    names = [trace.name for trace in figure.data]
    assert names[0] == "unassigned" and len(names) == 1 + 5
    for i in range(5):
        assert names[i + 1].startswith(f"{summary.label(i)} ({summary.point_counts[i]:,} points")
        assert f"instance {i}" in figure.data[i + 1].hovertemplate
        drawn = figure.data[i + 1].x[~np.isnan(figure.data[i + 1].x)]
        np.testing.assert_array_equal(np.sort(drawn), np.sort(xyz[summary.instance == i, 0].astype(np.float32)))
    assert sum(np.isfinite(trace.x).sum() for trace in figure.data) == 3000
    assert np.isnan(figure.data[5].x).all() and len(figure.data[5].x) == 1  # listed, draws nothing
    by_instance, by_class = figure.layout.updatemenus[0].buttons
    assert by_instance.args[0]["marker.color"] == [trace.marker.color for trace in figure.data]
    palette = class_colors()
    expected = ["#808080"] + ["#{:02x}{:02x}{:02x}".format(*palette[name]) if name in palette else "#808080"
                              for name in summary.class_names]
    assert by_class.args[0]["marker.color"] == expected
    title = figure.layout.title.text
    assert "RANDOM WEIGHTS (seed 3)" in title and "color:red" in title and "display only" not in title

    path = render_instances_html(tmp_path / "v.html", xyz, summary, scene="scene0011_00", caption=RANDOM)
    page = path.read_text()
    assert "<script src=" not in page.replace('<script src="data:', ""), "the page loads something from outside"
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js inlined: works offline
    assert [p.name for p in tmp_path.iterdir()] == ["v.html"]


def test_viewer_decimates_big_scenes_for_display_only_and_recentres_far_ones():
    xyz, _, masks, ids, scores = random_result(num_points=5000, num_instances=3, seed=4)
    summary = _summary(masks, ids, scores)
    figure = viewer_figure(xyz + [4.5e5, 5.1e6, 20.0], summary, scene="far", caption=CHECKPOINT, max_points=1000)
    assert sum(np.isfinite(trace.x).sum() for trace in figure.data) == 1000
    assert "display only: 1,000 of 5,000 points drawn" in figure.layout.title.text
    assert figure.layout.scene.xaxis.title.text == "x − 450000 (m)"
    assert figure.layout.scene.zaxis.title.text == "z (m)" or "z −" in figure.layout.scene.zaxis.title.text
    shown = np.concatenate([trace.x for trace in figure.data])
    shown = shown[np.isfinite(shown)]
    assert 0 <= shown.min() and shown.max() < 5  # metres from the scene's corner, float32-exact enough
    assert json.dumps(figure.layout.title.text)  # plain text, no numpy left in the layout
    empty = _summary(np.zeros((0, 0), bool), np.zeros(0, int), np.zeros(0))
    assert len(viewer_figure(np.zeros((0, 3)), empty, scene="none").data) == 1
