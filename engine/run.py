"""``python -m engine.run SCAN [...]``: DKNet instance segmentation from the command line.

Errors a user can cause (bad files, bad checkpoint, no device, out of memory) end the scene with
one line on stderr and a non-zero exit status; nothing partial is left in the output folder. What
can be checked before inference is checked first, for every scene: scene names (sanitized with a
warning, refused when empty or shared by two inputs) and that ``--out`` and ``--dump`` are
writable. A scene's outputs, its dump included, are written all or none. Ctrl-C stops with one
line and exit status 130, leaving nothing partial.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from engine.cli_args import EXPORTED_BACKBONES, dump_path, parse_args, pictures_of
from engine.errors import UserError, print_error, print_warning
from engine.session import build_session, choose_cpu_threads, kernels_description

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def _is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (``torch.OutOfMemoryError``) or Python (``MemoryError``) out of memory, by type; torch's
    CPU allocator raises a plain RuntimeError (torch 2.13), recognised by the allocator's name."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator" in str(exc)


def _write_dump(path: Path, arrays: dict) -> None:
    import numpy as np

    from engine.atomic import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as stream:  # a file object: savez adds no ".npz"
        np.savez(stream, **arrays)


def _scene_names(paths: list[Path]) -> dict[Path, str]:
    """The output name of every input, checked before any inference: sanitized names are announced
    (one warning line each); an empty name, or two inputs with one name (one file given twice
    included), is a UserError."""
    from engine.scene_io import SceneInputError, safe_scene_name

    names: dict[Path, str] = {}
    owner: dict[str, Path] = {}
    for path in paths:
        try:
            name, note = safe_scene_name(path)
        except SceneInputError as exc:
            raise UserError(str(exc)) from None
        if note:
            print_warning(note)
        if name in owner:
            other = owner[name]
            same = other.resolve() == path.resolve()
            what = "is given twice" if same else f"and {other} both give scene name {name!r}"
            raise UserError(f"{path} {what}: their outputs would overwrite each other (give each scan once, "
                            "with distinct file names)")
        owner[name] = path
        names[path] = name
    return names


def _check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and write (and remove) a probe file there; UserError if it cannot."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dknet-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from None


def _check_outputs(args, names: dict[Path, str]) -> None:
    """``--out`` and every ``--dump`` file writable, before inference."""
    _check_writable(args.out, "--out")
    if args.dump is None:
        return
    for name in names.values():
        target = dump_path(args.dump, name, len(names))
        if target.is_dir():
            raise UserError(f"--dump {target}: is a folder, not a file")
        _check_writable(target.parent, "--dump")


def read_step(scene_path: Path, no_superpoints: bool, timer, up_axis: str = "z", units: str = "m",
              colour_max: int | None = None):
    """Read a scene and its superpoints: (``engine.scene_io.Scene``, superpoints (N,) int or None,
    their source); a bad file becomes UserError. ``up_axis``, ``units``, ``colour_max``: as
    ``engine.scene_io.read_scene``."""
    from engine.scene_io import SceneInputError, read_scene
    from engine.superpoints import superpoints_for_scene

    try:
        with timer.stage("read"):
            scene = read_scene(scene_path, up_axis=up_axis, units=units, colour_max=colour_max)
        with timer.stage("superpoints"):
            if no_superpoints:
                superpoints, source = None, "off"
            else:
                superpoints, source = superpoints_for_scene(scene.path, scene.xyz, scene.faces)
    except (SceneInputError, ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    return scene, superpoints, source


def infer_step(session, backbone: str, scene, superpoints, timer):
    """DKNet on a read scene (``engine.pipeline.SceneResult``); out of memory and exported-backbone
    failures become UserError."""
    from engine.pipeline import infer_scene

    try:
        return infer_scene(session, scene.xyz, scene.rgb, superpoints, timer)
    except (RuntimeError, MemoryError) as exc:  # BackendError is a RuntimeError
        if _is_out_of_memory(exc):
            raise UserError(f"{scene.path}: out of memory on {session.device.type} "
                            f"({scene.num_points} points); try --device cpu or a smaller scene") from None
        if backbone in EXPORTED_BACKBONES:
            from export.runtime import BackendError

            if isinstance(exc, BackendError):  # e.g. a scene beyond the TensorRT profile's voxel bounds
                raise UserError(f"{scene.path}: {exc}") from None
        raise


def write_step(out_dir: Path, name: str, scene, pred_masks, pred_labels, pred_scores, timer,
               caption=None, pictures: tuple[bool, bool] = (True, False),
               dump: tuple[Path, dict] | None = None) -> None:
    """Write a scene's outputs under its output ``name`` (``engine.outputs.write_scene_outputs``:
    masks (M, N) bool, labels (M,) int64, scores (M,) float32; ``pictures``: (png, html)), and its
    ``--dump`` (file, arrays) when given: all or none. ``caption`` (``engine.pictures.caption.Caption``:
    the weights and what ran) is stated by the pictures. UserError when they cannot be written."""
    from engine.outputs import write_scene_outputs

    png, html = pictures
    try:
        with timer.stage("write"):
            if dump is not None:
                _write_dump(*dump)
            try:
                write_scene_outputs(out_dir, name, scene.xyz, scene.faces, pred_masks, pred_labels, pred_scores,
                                    caption, png=png, html=html)
            except BaseException:
                if dump is not None:  # all or none: the dump goes with the failed outputs
                    dump[0].unlink(missing_ok=True)
                raise
    except OSError as exc:
        raise UserError(f"cannot write outputs for {name}: {exc}") from None


def caption_of(args, session, backbone: str):
    """The ``engine.pictures.caption.Caption`` of a run: its weights, ``backbone`` (the provider that
    ran) and the session's later-stage kernels."""
    from engine.pictures.caption import Caption
    from engine.session import resolve_checkpoint

    note = weights_note(args)
    weights = note or f"checkpoint {resolve_checkpoint(args.checkpoint, args.random_weights).name}"
    return Caption(weights=weights, random_weights=note is not None, backbone=backbone,
                   kernels=f"{kernels_description(session)} ({session.device.type})")


def weights_note(args) -> str | None:
    """What every output says when the weights are random (None for a checkpoint)."""
    return f"RANDOM WEIGHTS (seed {args.seed}): the instances are meaningless" if args.random_weights else None


def _segment(args, session, scene_path: Path, name: str, num_scenes: int):
    """Read, infer and write one scene; returns (result, stage times ms, notes)."""
    from engine.stage_timer import StageTimer

    timer = StageTimer(session.device)
    scene, superpoints, source = read_step(scene_path, args.no_superpoints, timer, args.up_axis, args.units,
                                           args.colour_max)
    result = infer_step(session, args.backbone, scene, superpoints, timer)
    dump = (dump_path(args.dump, name, num_scenes), result.dump_arrays()) if args.dump is not None else None
    write_step(args.out, name, scene, result.pred_masks, result.pred_labels, result.pred_scores, timer,
               caption_of(args, session, result.backbone), pictures_of(args), dump)
    notes = {"points": scene.num_points, "voxels": result.num_voxels, "candidates": result.candidates.size,
             "instances": result.instance_centers.size, "predicted": result.pred_labels.size,
             "superpoints": source, "warnings": scene.warnings}
    return result, timer.ms, notes


def _evaluate(running, gt_dir: Path, name: str, result) -> None:
    """Add one scene to the running AP, scores rounded as the submission file writes them."""
    import numpy as np

    from engine.eval import read_gt_ids

    gt_file = gt_dir / f"{name}.txt"
    if not gt_file.is_file():
        raise UserError(f"{gt_file}: no ground truth for scene {name}; its outputs are written, not evaluated")
    gt_ids = read_gt_ids(gt_file)
    scores = np.array([float(f"{s:.4f}") for s in result.pred_scores])
    try:
        running.add_scene(result.pred_masks, result.pred_labels, scores, gt_ids)
    except ValueError as exc:
        raise UserError(f"{gt_file}: {exc}") from None


def _print_report(console, name: str, stage_ms: dict, notes: dict, provider: str, device) -> None:
    from rich.table import Table

    from engine.budget import RTX3090_BUDGET_MS, RTX3090_TOTAL_MS, STAGES

    console.print(f"{name}: {notes['points']} points, {notes['voxels']} voxels, {notes['candidates']} candidates, "
                  f"{notes['instances']} instances, {notes['predicted']} predicted", markup=False, soft_wrap=True)
    console.print(f"device {device.type}, {provider}, superpoints {notes['superpoints']}",
                  markup=False, soft_wrap=True)
    table = Table()
    table.add_column("stage")
    table.add_column("ms", justify="right")
    table.add_column("RTX 3090 budget ms", justify="right")
    table.add_column("x budget", justify="right")
    for stage in STAGES:
        ms = stage_ms.get(stage, 0.0)
        budget = RTX3090_BUDGET_MS[stage]
        table.add_row(stage, f"{ms:.1f}", f"{budget:.1f}", f"{ms / budget:.2f}")
    total = sum(stage_ms.get(s, 0.0) for s in STAGES)
    table.add_row("total (4 stages)", f"{total:.1f}", f"{RTX3090_TOTAL_MS:.1f}", f"{total / RTX3090_TOTAL_MS:.2f}")
    for extra in ("read", "superpoints", "write"):
        table.add_row(f"{extra} (outside budget)", f"{stage_ms.get(extra, 0.0):.1f}", "", "")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    choose_cpu_threads()
    try:
        return _run(args)
    except KeyboardInterrupt:  # every writer is atomic: what was not renamed into place is removed
        print_error("interrupted (Ctrl-C); nothing partial was written")
        return EXIT_INTERRUPTED


def _run(args) -> int:
    from rich.console import Console

    from engine.outputs import scene_files

    console = Console()
    started = time.perf_counter()
    try:
        names = _scene_names(args.scenes)
        _check_outputs(args, names)
        session = build_session(args)
    except UserError as exc:
        print_error(exc)
        return 1
    note = weights_note(args)
    if note:
        console.print(f"{note}; pass --checkpoint for real predictions", markup=False, style="bold red",
                      soft_wrap=True)
    failures = 0
    running = None
    if args.gt is not None:
        from engine.instance_ap import InstanceAP

        running = InstanceAP()
    for index, scene_path in enumerate(args.scenes, start=1):
        name = names[scene_path]
        try:
            with console.status(f"[{index}/{len(args.scenes)}] segmenting {scene_path.name}"):
                result, stage_ms, notes = _segment(args, session, scene_path, name, len(args.scenes))
        except UserError as exc:
            print_error(exc)
            failures += 1
            continue
        for warning in notes["warnings"]:
            print_warning(warning)
        _print_report(console, name, stage_ms, notes,
                      f"backbone {result.backbone}, later stages on {kernels_description(session)}", session.device)
        summary_file, *others = scene_files(name, *pictures_of(args))
        console.print(f"wrote {args.out / summary_file}, {', '.join(others)}" + (f" ({note})" if note else ""),
                      markup=False)
        if running is not None:
            try:
                _evaluate(running, args.gt, name, result)
            except UserError as exc:
                print_error(exc)
                failures += 1
                continue
            ap = running.result()
            console.print(f"running AP over {running.num_scenes} scene(s): mAP {ap.mean_ap:.3f}, "
                          f"AP50 {ap.mean_ap50:.3f}, AP25 {ap.mean_ap25:.3f}", markup=False)
    if running is not None and running.num_scenes:
        from engine.eval import print_table

        print_table(console, running.result(), running.num_scenes)
    console.print(f"{len(args.scenes) - failures}/{len(args.scenes)} scenes in "
                  f"{time.perf_counter() - started:.1f} s", markup=False)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
