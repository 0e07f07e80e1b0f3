"""``python -m profiling.gpu_check [--out DIR] [--quick] [--interpret]``: is every Triton kernel correct
on this GPU, and how fast is each stage?

Steps (each in its own process, with its own time limit; Triton's cache starts empty, so compile
times are those of a new machine):

1. environment: GPU, SMs, memory, driver, CUDA, torch, triton, numpy, Python;
2. every kernel's cases (``checks``) compiled and compared with the torch references, several
   kernels at a time; their registers, spills and dynamic shared memory (``kernels.compile_check``
   for this GPU's architecture);
3. end to end on generated scenes (20k and 150k points, seeded weights): ``--kernels triton``
   against ``--kernels torch``, and each available backbone against the native torch form;
4. timings with CUDA events after warm-up: per stage against the RTX 3090 budget and the H100
   targets, the backbone per precision, TFLOP/s and % of peak, per kernel, decoding's memory;
5. ``DIR/report.json``, ``DIR/report.md`` and a summary; exit status 1 if any check failed or any
   step timed out or crashed.

``--quick``: the 20k scene only, fewer timed runs. ``--interpret``: the same steps on CPU in
Triton's interpreter on a tiny scene (how CI keeps this command working; its times mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

KERNEL_STEPS_AT_ONCE = 4  # kernel-case steps run side by side (compiling is CPU-bound), at most one per core
SCENE_POINTS = (20_000, 150_000)
INTERPRETED_POINTS = 1_000


@dataclass(frozen=True)
class Step:
    name: str  # "environment", "kernels:<module>", "resources", "end_to_end:<points>", "timings:<points>"
    limit_s: float
    parallel: bool = False  # may run beside other parallel steps (no timing in it)

    @property
    def file_stem(self) -> str:
        return self.name.replace(":", "_")


def plan(interpret: bool, quick: bool) -> list[Step]:
    """The steps in order, with time limits generous for a cold Triton cache (interpreter: for 2 CPU
    cores)."""
    from checks import KERNELS

    scale = 3.0 if interpret else 1.0
    sizes = (INTERPRETED_POINTS,) if interpret else SCENE_POINTS[:1] if quick else SCENE_POINTS
    steps = [Step("environment", 60)]
    steps += [Step(f"kernels:{kernel}", 120 * scale, parallel=True) for kernel in KERNELS]
    steps.append(Step("resources", 240, parallel=True))
    steps += [Step(f"end_to_end:{points}", (90 if points <= 20_000 else 150) * scale) for points in sizes]
    steps += [Step(f"timings:{points}", (90 if points <= 20_000 else 180) * scale) for points in sizes]
    return steps


def run_step(name: str, interpret: bool, quick: bool) -> dict:
    """Body of one step's process."""
    import torch

    from profiling.gpu_check import steps

    device = torch.device("cpu" if interpret else "cuda")
    kind, _, argument = name.partition(":")
    if kind == "environment":
        return steps.environment(device)
    if kind == "kernels":
        return steps.kernel_cases(argument, device)
    if kind == "resources":
        major, minor = torch.cuda.get_device_capability(device) if device.type == "cuda" else (9, 0)
        return steps.kernel_resources(10 * major + minor, first_only=interpret)
    if kind == "end_to_end":
        return steps.end_to_end(int(argument), device, interpreted=interpret)
    if kind == "timings":
        repeats, warmup = (1, 0) if interpret else (5, 2) if quick else (10, 3)
        return steps.timings(int(argument), device, repeats, warmup, interpreted=interpret)
    raise ValueError(f"unknown step {name!r}")


def _child_command(step: Step, out: Path, interpret: bool, quick: bool) -> list[str]:
    command = [sys.executable, "-m", "profiling.gpu_check", "--step", step.name, "--out", str(out)]
    return command + ["--interpret"] * interpret + ["--quick"] * quick


def steps_at_once() -> int:
    return max(1, min(KERNEL_STEPS_AT_ONCE, os.cpu_count() or 1))


def _child_environment(step: Step, interpret: bool, cache: str) -> dict[str, str]:
    """The step's variables: Triton's mode and cache, and CPU threads shared among the steps that
    run at once (oversubscribed OpenMP threads busy-wait and slow everything down many times)."""
    threads = (os.cpu_count() or 1) // steps_at_once() if step.parallel else os.cpu_count() or 1
    env = dict(os.environ, TRITON_CACHE_DIR=cache, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(max(1, threads)))
    # resources compiles for a GPU target without one under --interpret: compiled mode there
    env["TRITON_INTERPRET"] = "1" if interpret and step.name != "resources" else "0"
    return env


def run_steps(steps: list[Step], out: Path, interpret: bool, quick: bool, progress) -> dict[str, dict]:
    """Run every step in its own process: parallel ones up to ``steps_at_once()`` at a time,
    the others alone. Each result: ``{"status": ok|crashed|timeout, "seconds", "limit_s", "result"
    or "error"}``."""
    (out / "steps").mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_triton_cache_") as cache:
        pending = list(steps)
        running: list[tuple[Step, subprocess.Popen, float, object]] = []
        while pending or running:
            while pending and (not running or (pending[0].parallel and running[0][0].parallel
                                               and len(running) < steps_at_once())):
                step = pending.pop(0)
                log = open(out / "steps" / f"{step.file_stem}.log", "w")  # noqa: SIM115  (closed when it ends)
                process = subprocess.Popen(_child_command(step, out, interpret, quick), stdout=log,
                                           stderr=subprocess.STDOUT, env=_child_environment(step, interpret, cache))
                running.append((step, process, time.monotonic(), log))
            time.sleep(0.2)
            for entry in list(running):
                step, process, began, log = entry
                elapsed = time.monotonic() - began
                if process.poll() is None and elapsed <= step.limit_s:
                    continue
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()
                running.remove(entry)
                results[step.name] = _collect(step, process.returncode, elapsed, out)
                progress(step, results[step.name])
    return results


def _collect(step: Step, returncode: int, elapsed: float, out: Path) -> dict:
    entry = {"seconds": round(elapsed, 2), "limit_s": step.limit_s}
    result_file = out / "steps" / f"{step.file_stem}.json"
    log = (out / "steps" / f"{step.file_stem}.log").read_text(errors="replace").strip().splitlines()
    if elapsed > step.limit_s:
        return {**entry, "status": "timeout", "error": f"no result within {step.limit_s:.0f} s (killed)"}
    if returncode != 0 or not result_file.exists():
        last = log[-1] if log else f"exit status {returncode}"
        return {**entry, "status": "crashed", "error": last}
    return {**entry, "status": "ok", "result": json.loads(result_file.read_text())}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiling.gpu_check", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"),
                        help="folder for report.json, report.md and each step's log (default gpu_check_out)")
    parser.add_argument("--quick", action="store_true", help="the 20k-point scene only, fewer timed runs")
    parser.add_argument("--interpret", action="store_true",
                        help="run on CPU in Triton's interpreter on a tiny scene (checks this command; slow)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.step is not None:
        result = run_step(args.step, args.interpret, args.quick)
        path = args.out / "steps" / f"{args.step.replace(':', '_')}.json"
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        return 0
    import torch

    if not args.interpret and not torch.cuda.is_available():
        print("error: no CUDA device is visible; gpu_check needs a GPU (--interpret runs its checks on CPU in "
              "Triton's interpreter)", file=sys.stderr)
        return 1
    from profiling.gpu_check.report import build_report, print_summary, render_markdown

    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    started = datetime.now(timezone.utc)
    steps = plan(args.interpret, args.quick)
    began = time.monotonic()

    def progress(step: Step, entry: dict) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {step.name:24} {entry['status']:8} {entry['seconds']:6.1f} s",
              flush=True)

    try:
        results = run_steps(steps, args.out, args.interpret, args.quick, progress)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    meta = {"command": shlex.join(["python", "-m", "profiling.gpu_check", *(argv if argv is not None else
                                                                              sys.argv[1:])]),
            "started": started.isoformat(timespec="seconds"), "wall_s": round(time.monotonic() - began, 1),
            "mode": "interpreter (CPU)" if args.interpret else "compiled (CUDA)", "quick": args.quick}
    report = build_report(meta, [s.name for s in steps], results)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.md").write_text(render_markdown(report))
    print_summary(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
