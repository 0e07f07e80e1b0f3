"""The three stages of a scene in ``engine.batch``, as Ray-free functions on Ray Data rows.

A row is ``{"scene": name, "state": bytes}``: a pickled :class:`SceneState`, what travels from one
stage to the next (the read scene, then the predictions). Each stage is ``engine.run``'s own step
(``read_step``, ``infer_step``, ``write_step``), so a scene's files are the bytes ``engine.run``
writes. A failure is caught per scene and travels on as a one-line ``error``; later stages pass
such a row through untouched, so one bad scene never stops the others. ray is not imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.batch.markers import mark_complete
from engine.errors import UserError

__all__ = ["InferActor", "SceneState", "initial_row", "read_row", "record_of", "write_row"]


@dataclass
class SceneState:
    """One scene between stages (N points, M predicted instances)."""

    name: str
    input: str
    error: str = ""  # one line; empty while the scene is fine
    setup_error: bool = False  # the error is the worker's (weights, device), not the scene's
    scene: object | None = None  # engine.scene_io.Scene after reading, dropped once written
    superpoints: np.ndarray | None = None  # (N,) int64 or None
    superpoint_source: str = ""
    pred_masks: np.ndarray | None = None  # (M, N) bool
    pred_labels: np.ndarray | None = None  # (M,) int64 nyu40 ids
    pred_scores: np.ndarray | None = None  # (M,) float32
    points: int = 0
    voxels: int = 0
    instances: int = 0  # merged instances (I)
    predicted: int = 0  # written predictions (M)
    stage_ms: dict[str, float] = field(default_factory=dict)
    caption: object | None = None  # engine.pictures.caption.Caption of the worker that inferred it
    worker: str = ""  # host:pid of the inference worker
    bytes_read_to_infer: int = 0  # size of the row handed from reading to inference
    bytes_infer_to_write: int = 0  # size of the row handed from inference to writing


def initial_row(name: str, path: Path) -> dict:
    """The row that enters the pipeline for one scene."""
    return _row(SceneState(name=name, input=str(path)))


def record_of(state: SceneState) -> dict:
    """The scene's entry in ``report.json`` (and its completion marker)."""
    return {"scene": state.name, "input": state.input, "status": "failed" if state.error else "done",
            "error": state.error or None, "points": state.points, "voxels": state.voxels,
            "instances": state.instances, "predicted": state.predicted,
            "superpoints": state.superpoint_source or None,
            "stage_ms": {stage: round(ms, 3) for stage, ms in state.stage_ms.items()}, "worker": state.worker or None,
            "bytes_read_to_infer": state.bytes_read_to_infer, "bytes_infer_to_write": state.bytes_infer_to_write}


def read_row(row: dict, no_superpoints: bool) -> dict:
    """Stage 1 (a CPU task): read the PLY and its superpoints."""
    import torch

    from engine.run import read_step
    from engine.stage_timer import StageTimer

    state = _state(row)
    timer = StageTimer(torch.device("cpu"))
    try:
        state.scene, state.superpoints, state.superpoint_source = read_step(Path(state.input), no_superpoints, timer)
        state.points = state.scene.num_points
    except Exception as exc:  # any failure ends this scene only, as one line
        state.error = _one_line(exc)
    state.stage_ms.update(timer.ms)
    return _row(state)


class InferActor:
    """Stage 2 (an actor of the pool): the model is built once per actor, then runs scene after
    scene. A setup failure (weights, device) is reported on every scene as a ``setup_error``."""

    def __init__(self, args: argparse.Namespace, threads: int):
        import torch

        from engine.session import build_session

        torch.set_num_threads(threads)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.args, self.backbone = args, args.backbone
        self.session, self.setup_error = None, ""
        try:
            self.session = build_session(args)
        except Exception as exc:  # reported with the first scene, then the run stops
            self.setup_error = _one_line(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        states = [self._infer(bytes(raw)) for raw in batch["state"]]
        return {"scene": np.asarray(batch["scene"]), "state": np.array(states, dtype=object)}

    def _infer(self, raw: bytes) -> bytes:
        from engine.run import caption_of, infer_step
        from engine.stage_timer import StageTimer

        state = pickle.loads(raw)
        state.worker, state.bytes_read_to_infer = self.worker, len(raw)
        if state.error:
            return raw
        if self.session is None:
            state.error, state.setup_error = self.setup_error, True
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        timer = StageTimer(self.session.device)
        try:
            result = infer_step(self.session, self.backbone, state.scene, state.superpoints, timer)
            state.pred_masks, state.pred_labels, state.pred_scores = (
                result.pred_masks, result.pred_labels, result.pred_scores)
            state.voxels, state.instances, state.predicted = (
                result.num_voxels, int(result.instance_centers.size), int(result.pred_labels.size))
            state.caption = caption_of(self.args, self.session, result.backbone)
        except Exception as exc:  # any failure ends this scene only, as one line
            state.error = _one_line(exc)
        state.stage_ms.update(timer.ms)
        state.superpoints = None  # not needed for writing
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def write_row(row: dict, out_dir: str, pictures: tuple[bool, bool]) -> dict:
    """Stage 3 (a CPU task): write the outputs (all or nothing; ``pictures``: (png, html), the
    caption as the inference worker made it, as ``engine.run`` writes them), then the completion marker.
    Returns ``{"scene": name, "record": JSON of the report record}``."""
    import torch

    from engine.run import write_step
    from engine.stage_timer import StageTimer

    state = _state(row)
    state.bytes_infer_to_write = len(row["state"])
    if not state.error:
        timer = StageTimer(torch.device("cpu"))
        try:
            write_step(Path(out_dir), state.name, state.scene, state.pred_masks, state.pred_labels, state.pred_scores,
                       timer, state.caption, pictures)
            state.stage_ms.update(timer.ms)
            mark_complete(Path(out_dir), state.name, record_of(state))
        except Exception as exc:  # any failure ends this scene only, as one line
            state.error = _one_line(exc)
    record = record_of(state)
    record["setup_error"] = state.setup_error
    return {"scene": state.name, "record": json.dumps(record)}


def _state(row: dict) -> SceneState:
    return pickle.loads(row["state"])


def _row(state: SceneState) -> dict:
    return {"scene": state.name, "state": pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)}


def _one_line(exc: BaseException) -> str:
    """A user error's own line; anything else as ``internal error: <type>: <message>``, one line."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, UserError) else f"internal error: {type(exc).__name__}: {text}"
