"""``python -m profiling.gpu_check``: every kernel checked and every stage timed on one GPU, in one command.

``__main__`` plans the steps and runs each in its own process with its own time limit (a hang is
reported as a timeout and the rest still runs); ``steps`` holds what each step does; ``report``
turns their results into ``report.json``, ``report.md`` and the summary on stdout.
"""
