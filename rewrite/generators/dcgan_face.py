"""The embedded default: the pretrained DCGAN face generator shipped in `gan-face-generate==1.1.1`.

64x64 faces (DigiFace1M, MIT licence), PyTorch-tutorial DCGAN layout, 100-d z. The weights file
lives inside the installed wheel, so this works offline.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torch import nn

from rewrite.core.checkpoints import load_state_dict_file
from rewrite.generators.base import GeneratorAdapter

Z_DIM = 100


def dcgan_generator(nz: int = Z_DIM, ngf: int = 64, nc: int = 3) -> nn.Module:
    """The PyTorch DCGAN-tutorial generator; module names match the shipped `netG_state_dict`."""
    model = nn.Module()
    model.main = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    model.forward = model.main.forward  # type: ignore[method-assign]
    return model


def shipped_weights_path() -> Path:
    """Where pip put `weights.tar` (found through the package, not a hard-coded path)."""
    try:
        ref = resources.files("gan_face_generate") / "weights.tar"
    except ModuleNotFoundError as e:
        raise RuntimeError("the face model needs `pip install gan-face-generate==1.1.1`") from e
    return Path(str(ref))


def load_dcgan_face(checkpoint: str | None = None, key: str = "netG_state_dict") -> GeneratorAdapter:
    """The face generator with the shipped weights, or a compatible DCGAN checkpoint of yours."""
    model = dcgan_generator()
    path = Path(checkpoint) if checkpoint else shipped_weights_path()
    load_state_dict_file(model, path, key=key)
    return GeneratorAdapter(model, z_shape=(Z_DIM, 1, 1), name="dcgan_face")
