"""The interactive 3D viewer of a scene's result: one self-contained HTML file (plotly.js inlined:
works offline, no server, opens by double-click).

One WebGL point trace per instance (unassigned points first, grey), so the legend lists every
instance (number, class, confidence, points), even one with no point drawn, and a click toggles it
(double-click: only it); hovering a point shows its instance; two buttons switch between colouring
by instance and by semantic class. Rotate / zoom / pan are plotly's. Scenes above ``max_points``
are decimated for display only (a fixed-seed random subset, said on the page); the masks written
beside it are untouched. Coordinates farther than 10 km from the origin are shown relative to the
scene's minimum corner (float32 in the browser would round them), with the offset in the axis
titles.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.pictures.caption import Caption
from engine.pictures.palette import UNASSIGNED_RGB, class_colors, hex_colors
from engine.pictures.summary import InstanceSummary, drawn_points

__all__ = ["DISPLAY_POINTS", "render_instances_html", "viewer_figure"]

DISPLAY_POINTS = 300_000  # points a browser rotates smoothly as WebGL markers (plus ~4.7 MB of plotly.js)
_FAR_M = 1e4  # beyond this distance from the origin, coordinates are shown relative to the scene
_MARKER_PX = 2.0
_UNASSIGNED_HEX = hex_colors(np.array([UNASSIGNED_RGB]))[0]


def render_instances_html(path: os.PathLike | str, xyz: np.ndarray, summary: InstanceSummary, *, scene: str,
                          caption: Caption | None = None, max_points: int = DISPLAY_POINTS) -> Path:
    """Write :func:`viewer_figure` as one self-contained HTML file at ``path``, atomically."""
    path = Path(path)
    figure = viewer_figure(xyz, summary, scene=scene, caption=caption, max_points=max_points)
    with atomic_file(path) as tmp:
        figure.write_html(tmp, include_plotlyjs=True, full_html=True, auto_open=False, div_id="dknet-viewer",
                          config={"displaylogo": False, "responsive": True})  # fixed id: same scene, same bytes
    return path


def viewer_figure(xyz: np.ndarray, summary: InstanceSummary, *, scene: str, caption: Caption | None = None,
                  max_points: int = DISPLAY_POINTS):
    """The viewer (module docstring) as a ``plotly.graph_objects.Figure``: trace 0 the unassigned
    points, trace i + 1 instance i. xyz (N, 3) float metres."""
    import plotly.graph_objects as go

    shown = drawn_points(xyz.shape[0], max_points)
    xyz_shown = np.asarray(xyz[shown], dtype=np.float64)
    origin = np.floor(xyz_shown.min(axis=0)) if shown.size and np.abs(xyz_shown).max() > _FAR_M else np.zeros(3)
    xyz_shown = (xyz_shown - origin).astype(np.float32)
    instance = summary.instance[shown]
    by_instance = np.argsort(instance, kind="stable")
    starts = np.searchsorted(instance[by_instance], np.arange(-1, summary.num_instances + 1))

    instance_hex = hex_colors(summary.colors)
    palette = class_colors()
    class_hex = [hex_colors(palette[name][None])[0] if name in palette else _UNASSIGNED_HEX
                 for name in summary.class_names]
    traces = [_points(go, xyz_shown[by_instance[starts[0]:starts[1]]], "unassigned", _UNASSIGNED_HEX,
                      "unassigned<extra></extra>")]
    for i in range(summary.num_instances):
        count = f"{summary.point_counts[i]:,} points"
        traces.append(_points(
            go, xyz_shown[by_instance[starts[i + 1]:starts[i + 2]]], f"{summary.label(i)} ({count})", instance_hex[i],
            f"<b>instance {i}</b>: {summary.class_names[i]}<br>confidence {summary.scores[i]:.2f}<br>{count}"
            "<extra></extra>"))

    figure = go.Figure(traces)
    axis_titles = [f"{axis} (m)" if offset == 0 else f"{axis} − {offset:.0f} (m)"
                   for axis, offset in zip("xyz", origin, strict=True)]
    figure.update_layout(
        title={"text": _title(summary, scene, caption, shown.size), "x": 0.01, "xanchor": "left",
               "yref": "paper", "y": 1.0, "yanchor": "bottom", "automargin": True, "font": {"size": 14}},
        scene={"aspectmode": "data", "xaxis_title": axis_titles[0], "yaxis_title": axis_titles[1],
               "zaxis_title": axis_titles[2]},
        legend={"title": {"text": "instances (click: hide/show; double-click: only this)"},
                "itemsizing": "constant"},
        margin={"l": 0, "r": 0, "t": 20, "b": 0},
        updatemenus=[{
            "type": "buttons", "direction": "right", "x": 0.01, "y": 0.01, "xanchor": "left", "yanchor": "bottom",
            "buttons": [
                {"label": "colour by instance", "method": "restyle",
                 "args": [{"marker.color": [_UNASSIGNED_HEX, *instance_hex]}]},
                {"label": "colour by class", "method": "restyle",
                 "args": [{"marker.color": [_UNASSIGNED_HEX, *class_hex]}]},
            ]}],
    )
    return figure


def _points(go, xyz: np.ndarray, name: str, colour: str, hover: str):
    """One legend entry's points; an instance with no point drawn gets one NaN point (drawn as
    nothing), since plotly leaves empty traces out of the legend."""
    if xyz.shape[0] == 0:
        xyz = np.full((1, 3), np.nan, dtype=np.float32)
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name=name,
                        marker={"size": _MARKER_PX, "color": colour}, hovertemplate=hover)


def _title(summary: InstanceSummary, scene: str, caption: Caption | None, num_shown: int) -> str:
    """Scene and counts; the weights (red when random); what ran; the decimation, when any."""
    assigned = int((summary.instance >= 0).sum())
    lines = [f"<b>{scene}</b>: {summary.num_instances} instances, {assigned:,} of {summary.num_points:,} "
             "points assigned"]
    if caption is not None:
        weights = f"weights: {caption.weights}"
        lines.append(f"<span style='color:red'><b>{weights}</b></span>" if caption.random_weights else weights)
        if caption.run_line():
            lines.append(caption.run_line())
    if num_shown < summary.num_points:
        lines.append(f"display only: {num_shown:,} of {summary.num_points:,} points drawn (random subset); "
                     "the masks are complete")
    return "<br>".join(lines)
