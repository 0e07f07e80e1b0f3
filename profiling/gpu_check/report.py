"""``report.json`` (the schema is in the README), ``report.md`` and the summary of a gpu_check run.

Pure data handling on the steps' results; plain text, no dependency beyond the standard library
(a bare GPU machine has no rich).
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def _kernel_entries(step_names: list[str], results: dict[str, dict]) -> dict[str, dict]:
    resources = results.get("resources", {}).get("result", {}).get("kernels", {})
    kernels = {}
    for name in step_names:
        kind, _, kernel = name.partition(":")
        if kind != "kernels":
            continue
        step = results.get(name, {"status": "not run"})
        entry = dict(step.get("result") or {"passed": False, "cases": None, "failed": None,
                                             "failures": [f"{step['status']}: {step.get('error', '')}"]})
        entry["specializations"] = resources.get(kernel, [])
        kernels[kernel] = entry
    return kernels


def _sized(kind: str, results: dict[str, dict]) -> dict[str, dict]:
    sized = {}
    for name, step in results.items():
        if name.startswith(kind + ":"):
            sized[name.partition(":")[2]] = step.get("result") or {"passed": False, "error": step.get("error")}
    return sized


def build_report(meta: dict, step_names: list[str], results: dict[str, dict]) -> dict:
    """One JSON document from the steps' results (``__main__.run_steps``)."""
    steps = {name: {k: v for k, v in results.get(name, {"status": "not run"}).items() if k != "result"}
             for name in step_names}
    kernels = _kernel_entries(step_names, results)
    end_to_end = _sized("end_to_end", results)
    failures = [f"step {name}: {s['status']} ({s.get('error', '')})" for name, s in steps.items()
                if s["status"] != "ok"]
    failures += [f"kernel {name}: {'; '.join(k.get('failures', [])[:3])}" for name, k in kernels.items()
                 if not k.get("passed")]
    failures += [f"end to end {points}: {e.get('error') or 'checks failed'}" for points, e in end_to_end.items()
                 if not e.get("passed")]
    resources = results.get("resources", {}).get("result") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "passed": not failures,
        "failures": failures,
        "environment": results.get("environment", {}).get("result"),
        "steps": steps,
        "kernels": kernels,
        "resources": {k: v for k, v in resources.items() if k != "kernels"},
        "end_to_end": end_to_end,
        "timings": _sized("timings", results),
    }


def _fmt(value, spec: str = ".3g", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def kernel_rows(report: dict) -> list[list[str]]:
    rows = []
    for name, entry in report["kernels"].items():
        specs = entry.get("specializations", [])
        rows.append([name, "pass" if entry.get("passed") else "FAIL",
                     f"{(entry.get('cases') or 0) - (entry.get('failed') or 0)}/{_fmt(entry.get('cases'), 'd')}",
                     _fmt(entry.get("worst_error")), _fmt(entry.get("worst_ratio"), ".2f"),
                     _fmt(entry.get("seconds"), ".1f"),
                     _fmt(max((s["registers"] for s in specs), default=None), "d"),
                     _fmt(max((s["spill_bytes"] for s in specs), default=None), "d"),
                     _fmt(max((s["shared_bytes"] for s in specs), default=None), "d")])
    return rows


KERNEL_HEADER = ["kernel", "result", "cases", "worst error", "of tol.", "s", "max regs", "max spill B",
                 "max shared B"]
STAGE_HEADER = ["stage", "kernels", "median ms", "min-max", "3090 budget", "x budget", "H100 target", "x target"]


def stage_rows(timing: dict) -> list[list[str]]:
    rows = []
    for kernels, stages in timing.get("kernels", {}).items():
        for stage, stats in stages.items():
            if stage == "total_ms":
                continue
            rows.append([stage, kernels, f"{stats['ms']:.3f}", f"{stats['min_ms']:.3f}-{stats['max_ms']:.3f}",
                         f"{stats['budget_ms']:.1f}", f"{stats['budget_ratio']:.4f}", _fmt(stats.get("target_ms")),
                         _fmt(stats.get("target_ratio"), ".2f")])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _environment_line(report: dict) -> str:
    env = report.get("environment") or {}
    device = env.get("gpu") or env.get("cpu") or "unknown device"
    extra = f", {env['sms']} SMs, {env['memory_gib']:.0f} GiB, driver {env.get('driver')}" if env.get("sms") else ""
    return (f"{device}{extra}; CUDA {env.get('cuda_runtime')}, torch {env.get('torch')}, triton {env.get('triton')}, "
            f"numpy {env.get('numpy')}, Python {env.get('python')}")


def render_markdown(report: dict) -> str:
    lines = [f"# gpu_check: {'PASSED' if report['passed'] else 'FAILED'}", "",
             f"- {report['started']}, {report['mode']}, {report['wall_s']} s wall: `{report['command']}`",
             f"- {_environment_line(report)}", ""]
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- {failure}" for failure in report["failures"]] + [""]
    lines += ["## Kernels against their references", "",
              f"Resources compiled for {report['resources'].get('arch', '-')}"
              f"{' (first specialization per kernel only)' if report['resources'].get('first_only') else ''}.", ""]
    lines += _table(KERNEL_HEADER, kernel_rows(report)) + [""]
    for points, e2e in report["end_to_end"].items():
        lines += [f"## End to end, {points} points", ""]
        if "kernels" not in e2e:
            lines += [f"not run: {e2e.get('error')}", ""]
            continue
        k = e2e["kernels"]
        lines += [f"- triton vs torch kernels: {'pass' if k['passed'] else 'FAIL'} "
                  + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in k["checks"].items())
                  + f"; {k['candidates']} candidates, {k['instances']} instances, {k['predicted']} predicted; "
                  f"threshold shift {_fmt(k['threshold_shift'])}, min mask IoU {_fmt(k['min_mask_iou'], '.4f')}"]
        backbones = e2e["backbones"]
        lines.append(f"- backbones against {backbones['reference']} ({backbones['points']} points):")
        for name, b in backbones["compared"].items():
            if b.get("skipped"):
                lines.append(f"  - {name}: {b['skipped']}")
                continue
            verdict = ("pass" if b["passed"] else "FAIL") if b.get("judged", True) else "measured"
            diffs = ", ".join(f"{f} {_fmt(v)}" for f, v in b["max_difference"].items())
            lines.append(f"  - {name}: {verdict}; max |difference| {diffs}; semantic labels agree "
                         f"{100 * b['semantic_labels_agree']:.3f} %")
        lines.append("")
    for points, timing in report["timings"].items():
        lines += [f"## Timings, {points} points", ""]
        if "kernels" not in timing:
            lines += [f"not run: {timing.get('error')}", ""]
            continue
        lines += [f"{timing['voxels']} voxels, {timing['instances']} instances; backbone {timing['backbone']}; "
                  f"median of {timing['repeats']} runs after {timing['warmup']} warm-up", ""]
        lines += _table(STAGE_HEADER, stage_rows(timing)) + [""]
        lines += _table(["backbone precision", "ms", "TFLOP/s", "% of peak", "target ms"],
                        [[p, f"{v['ms']:.3f}", f"{v['tflops']:.2f}", _fmt(v["percent_of_peak"], ".1f"),
                          _fmt(v["target_ms"])] for p, v in timing["backbone_precisions"].items()]) + [""]
        d = timing["decoding"]
        lines.append(f"Decoding: {d['gflop']:.1f} GFLOP at {d['tflops']:.2f} TFLOP/s "
                     f"({_fmt(d['percent_of_peak'], '.1f')} % of the float32 peak).")
        if timing.get("memory"):
            m = timing["memory"]
            lines.append(f"Decoding + post-processing peak extra memory: {m['peak_extra_bytes'] / 2**20:.1f} MiB "
                         f"(O(N + I·K) = {m['linear_bytes'] / 2**20:.2f} MiB for N={m['points']}, I={m['instances']}, "
                         f"K=100; the output masks alone {m['output_mask_bytes'] / 2**20:.1f} MiB).")
        if timing.get("per_kernel"):
            lines += ["", *_table(["kernel", "module", "calls", "ms"],
                                  [[r["name"][:60], r["module"], str(r["calls"]), f"{r['ms']:.3f}"]
                                   for r in timing["per_kernel"][:25]])]
        lines.append("")
    lines += ["## Steps", ""] + _table(["step", "status", "seconds", "limit s"],
                                       [[n, s["status"], f"{s.get('seconds', 0):.1f}", f"{s.get('limit_s', 0):.0f}"]
                                        for n, s in report["steps"].items()])
    return "\n".join(lines) + "\n"


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]


def print_summary(report: dict) -> None:
    """One screen on stdout: environment, kernels, end to end, stage times, verdict."""
    print(_environment_line(report))
    print("\n".join(_columns(KERNEL_HEADER, kernel_rows(report))))
    for points, e2e in report["end_to_end"].items():
        k = e2e.get("kernels")
        backbones = e2e.get("backbones", {}).get("compared", {})
        judged = [b["passed"] for b in backbones.values() if b.get("judged", True) and b.get("passed") is not None]
        print(f"end to end {points} points: triton vs torch {'pass' if k and k['passed'] else 'FAIL'}, "
              f"backbones {'pass' if judged and all(judged) else 'FAIL'} ({len(judged)} compared)")
    for points, timing in report["timings"].items():
        if "kernels" in timing:
            kernels = "triton" if "triton" in timing["kernels"] else "torch"
            stats = timing["kernels"][kernels]
            stages = ", ".join(f"{s} {stats[s]['ms']:.2f}" for s in stats if s != "total_ms")
            fp16 = timing["backbone_precisions"].get("fp16")
            print(f"timings {points} points ({kernels} kernels, ms): {stages}; total {stats['total_ms']:.2f}"
                  + (f"; backbone fp16 {fp16['ms']:.2f}" if fp16 else ""))
    for failure in report["failures"]:
        print(f"FAILED {failure}")
    print(f"gpu_check {'PASSED' if report['passed'] else 'FAILED'} in {report['wall_s']} s "
          f"(report: report.json, report.md)")
