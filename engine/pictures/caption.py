"""What a picture states about how its result was made, beyond the points themselves."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Caption"]


@dataclass(frozen=True)
class Caption:
    """Where the weights came from and what ran; every picture prints it under the scene's name.

    ``weights`` is e.g. ``"checkpoint dknet_scannet.pth"`` or, for random weights, the warning that
    every output carries (``engine.run.weights_note``); ``random_weights`` makes the pictures show it
    in red. ``backbone`` and ``kernels`` name what ran (``engine.run``'s report line)."""

    weights: str
    random_weights: bool = False
    backbone: str = ""
    kernels: str = ""

    def run_line(self) -> str:
        """``"backbone native (oneDNN) · later stages on torch (cpu)"``; empty when neither is known."""
        parts = [f"backbone {self.backbone}" if self.backbone else "",
                 f"later stages on {self.kernels}" if self.kernels else ""]
        return " · ".join(p for p in parts if p)
