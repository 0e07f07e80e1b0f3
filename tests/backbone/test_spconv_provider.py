"""Provider seam: spconv on CPU, clear errors where no library can run."""

from __future__ import annotations

import pytest
import torch

from engine.backbone.spconv_unet import ProviderError, select_provider


def test_cpu_picks_spconv():
    provider = select_provider(torch.device("cpu"))
    assert provider.name == "spconv"
    assert hasattr(provider.module, "SubMConv3d") and hasattr(provider.module, "SparseInverseConv3d")


def test_spconv_triton_cannot_serve_cpu():
    with pytest.raises(ProviderError, match="spconv-triton") as info:
        select_provider(torch.device("cpu"), prefer="spconv-triton")
    assert "\n" not in str(info.value)


def test_unknown_provider():
    with pytest.raises(ProviderError, match="unknown sparse-conv provider"):
        select_provider(torch.device("cpu"), prefer="minkowski")


def test_spconv_backbone_reports_its_provider(spconv_backbone):
    assert spconv_backbone.name == "spconv" and spconv_backbone.provider == "spconv (spconv)"
