"""Pictures of one scene's result, for people: the PNG quick look (``png``) and the interactive 3D
viewer (``html``). Both draw the same :class:`~engine.pictures.summary.InstanceSummary` with the
same colours (``palette``) and say what produced the result (``caption``). No torch import."""
