"""``DIR/report.json`` of an ``engine.batch`` run (schema_version 1).

Top level: ``command``, ``started`` (UTC, ISO 8601), ``wall_s`` (the whole command),
``pipeline_s`` (first scene submitted to last scene back), ``ray`` (``address``, ``startup_s``,
``cpus``, ``gpus``; null when every scene was already done), ``workers``, ``gpus_per_worker``,
``totals``, ``ap`` (``--gt``: mAP, AP50, AP25, per class; else null), ``scenes``: one record per
scene in input order: ``scene``, ``input``, ``status`` (done / skipped: complete from an earlier
run, its stored record / failed), ``error`` (one line), ``points``, ``voxels``, ``instances``
(merged), ``predicted`` (written), ``superpoints`` (their source), ``stage_ms`` (read,
superpoints, backbone, encoding, decoding, post_processing, write), ``worker`` (host:pid of the
inference worker), ``bytes_read_to_infer`` / ``bytes_infer_to_write`` (what moved between stages),
``finished_s`` (when it came back, seconds after the pipeline started; absent for skipped scenes).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.atomic import atomic_file

__all__ = ["REPORT_NAME", "totals", "write_report"]

REPORT_NAME = "report.json"


def totals(records: list[dict], pipeline_s: float) -> dict:
    """Counts by status; points, instances and stage times summed over the scenes done in this
    run; their rate over the pipeline's wall time (``scenes_per_s``: start-up of the workers
    included) and in steady state (``steady_scenes_per_s``: the scenes after the first one done,
    over the time from the first done to the last; what a long run approaches)."""
    done = [r for r in records if r["status"] == "done"]
    finished = sorted(r["finished_s"] for r in done if r.get("finished_s") is not None)
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) if len(finished) > 1 and finished[-1] > finished[0] \
        else None
    stage_ms: dict[str, float] = {}
    for record in done:
        for stage, ms in record["stage_ms"].items():
            stage_ms[stage] = round(stage_ms.get(stage, 0.0) + ms, 3)
    return {
        "scenes": len(records), "done": len(done),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "points": sum(r["points"] for r in done), "predicted": sum(r["predicted"] for r in done),
        "stage_ms": stage_ms, "scenes_per_s": round(len(done) / pipeline_s, 4) if pipeline_s > 0 else None,
        "steady_scenes_per_s": round(steady, 4) if steady is not None else None,
        "bytes_between_stages": sum(r["bytes_read_to_infer"] + r["bytes_infer_to_write"] for r in done),
    }


def write_report(out_dir: Path, report: dict) -> Path:
    """Write ``report`` to ``out_dir/report.json`` atomically; returns the path."""
    path = out_dir / REPORT_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"schema_version": 1, **report}, indent=1) + "\n")
    return path
