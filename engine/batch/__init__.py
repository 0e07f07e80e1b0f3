"""``python -m engine.batch INPUTS... --out DIR``: DKNet over many scans on a Ray cluster.

One module per job: ``cli`` (arguments, the command), ``inputs`` (INPUTS -> scenes), ``markers``
(completion markers, resume), ``stages`` (read, infer, write one scene: Ray-free functions on rows),
``pipeline`` (the Ray Data pipeline), ``cluster`` (starting or joining Ray), ``progress`` (the bar),
``report`` (``DIR/report.json``), ``evaluation`` (``--gt``). Only ``cluster`` and ``pipeline``
import ray; nothing outside this package does.
"""
