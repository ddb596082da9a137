"""The EfficientNet-Lite0 port: strict loading of the registry weights and sensible ImageNet labels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from engine.model.preprocess import prepare_photo
from training.models import efficientnet as E

# ImageNet-1k class indices of the cathedral's kind of scene.
CHURCHLIKE = {406: "altar", 483: "castle", 497: "church", 538: "dome", 663: "monastery",
              698: "palace", 884: "vault"}  # fmt: skip


def test_weights_load_strictly_and_have_the_lite0_shape(lite0):
    n = sum(p.numel() for p in lite0.parameters())
    assert n == 4_652_008  # 4.65 M, as the issue states
    assert lite0._fc.out_features == 1000 and len(lite0._blocks) == E.NUM_BLOCKS
    sd = torch.load(io.BytesIO(E.weights_bytes()), map_location="cpu", weights_only=True)
    assert len(sd) == 296 and "_conv_stem.weight" in sd and "_blocks.15._project_conv.weight" in sd
    # strict=True really is strict: a key short and the port refuses to load
    sd.pop("_blocks.3._bn1.running_var")
    with pytest.raises(RuntimeError, match="Missing key"):
        E.EfficientNetLite().load_state_dict(sd, strict=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.eps != 1e-3 for m in lite0.modules())


def test_berlin_cathedral_photos_are_named_as_churches(lite0, real_data):
    photos = sorted((real_data / "street_photos" / "berlin").glob("*.jpg"))
    assert len(photos) == 3
    x = torch.from_numpy(np.stack([prepare_photo(p, 224) for p in photos]))
    with torch.no_grad():
        prob = lite0(E.normalize_rgb(x)).softmax(-1)
    for i, p in enumerate(photos):
        top5 = prob[i].topk(5).indices.tolist()
        assert top5[0] in CHURCHLIKE, f"{p.name}: top-1 {top5[0]}"
        assert sum(c in CHURCHLIKE for c in top5) >= 4, f"{p.name}: top-5 {top5}"
        assert float(prob[i, list(CHURCHLIKE)].sum()) > 0.4


def test_tf_same_padding_matches_the_weights(lite0, real_data):
    """The weights are a TF port: its "SAME" padding gives lower entropy than a symmetric one."""
    photos = sorted((real_data / "street_photos").glob("*/*.jpg"))[:12]
    x = E.normalize_rgb(torch.from_numpy(np.stack([prepare_photo(p, 224) for p in photos])))

    def entropy() -> float:
        with torch.no_grad():
            p = lite0(x).softmax(-1)
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())

    same = entropy()
    forward = E.SameConv2d.forward
    try:  # symmetric k // 2 padding instead
        E.SameConv2d.forward = lambda self, t: torch.nn.functional.conv2d(
            t, self.weight, self.bias, self.stride, self.kernel_size[0] // 2, 1, self.groups
        )
        symmetric = entropy()
    finally:
        E.SameConv2d.forward = forward
    assert same < symmetric - 0.2


def test_trunk_and_tail_compose_to_features(lite0):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = lite0.features(x)
        for split in (5, 11, 16):
            t = lite0.trunk(x, split)
            assert t.shape[1] == E.trunk_channels(split)
            assert t.shape[-1] == 64 // E.trunk_stride(split)
            torch.testing.assert_close(lite0.tail(t, split), full, rtol=1e-5, atol=1e-5)
    assert full.shape == (2, E.FEATURE_DIM)
