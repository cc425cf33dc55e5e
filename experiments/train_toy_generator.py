"""Train the toy-world StyleGAN2 to draw render(params_from_z(z)) (L1 + perceptual regression).

    python experiments/train_toy_generator.py                       # conf/train_toy_generator.yaml
    python experiments/train_toy_generator.py trainer.max_time=00:00:05:00 out=/tmp/toy.pt
    python experiments/train_toy_generator.py trainer.accelerator=gpu batch_size=128   # on a GPU

Every batch is freshly rendered from seeded z on the training device, so there is no dataset on
disk; held-out z come from another seed. The L1 term can weight each pixel by the rarity of its
true class (`loss.class_balance`), so that windows, tower tops and watermarks are not averaged
away by the large sky and ground areas. Writes the EMA generator (`g_ema`, `latent_avg`) and a JSON
card, also every `save_every` steps so that a run cut short still leaves a checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.generators.toy_stylegan2 import TOY_LR_MLP, TOY_N_MLP, build_toy_stylegan2, toy_architecture
from rewrite.perceptual import EffNetFeatureDistance
from rewrite.toyworld import CLASSES, Z_DIM, params_from_z, render
from rewrite.toyworld.factors import linear_readout
from rewrite.toyworld.params import z_hat
from rewrite.toyworld.quality import score_images
from rewrite.toyworld.segmenter import load_toy_segmenter

CONF = str(Path(__file__).resolve().parent.parent / "conf")


class LatentBatches(IterableDataset):
    """Endless z batches from one seeded stream (rendered later, on the training device).

    With `pool`, batches are drawn (with replacement) from those fixed z only: a memorisation check
    that tells whether the generator can draw given scenes at all, apart from generalising over z.
    """

    def __init__(self, batch_size: int, seed: int, pool: Tensor | None = None) -> None:
        self.batch_size, self.seed, self.pool = batch_size, seed, pool

    def __iter__(self):  # noqa: ANN204
        g = torch.Generator().manual_seed(self.seed)
        while True:
            if self.pool is None:
                yield torch.randn(self.batch_size, Z_DIM, generator=g)
            else:
                yield self.pool[torch.randint(len(self.pool), (self.batch_size,), generator=g)]


def training_pool(z_val: Tensor, pool: int | None) -> Tensor | None:
    """The first `pool` validation z to train on (validation then measures the fit), or None: fresh z."""
    if pool is None:
        return None
    if not 0 < pool <= len(z_val):
        raise ValueError(f"train_pool={pool} must be in 1..eval.samples ({len(z_val)})")
    return z_val[:pool]


def class_weights(labels: Tensor, exponent: float, boost: Mapping[str, float] | None = None) -> Tensor:
    """Per-class pixel weights ∝ frequency^-exponent (times `boost[class]`), normalised so an average pixel weighs 1."""
    unknown = set(boost or {}) - set(CLASSES)
    if unknown:
        raise ValueError(f"loss.class_boost names unknown classes {sorted(unknown)}; classes: {', '.join(CLASSES)}")
    freq = torch.bincount(labels.flatten(), minlength=len(CLASSES)).double() / labels.numel()
    w = (freq + 1e-4) ** -exponent
    w = w * torch.tensor([float((boost or {}).get(c, 1.0)) for c in CLASSES], dtype=torch.float64)
    return (w / (freq * w).sum()).float()


def build_generator(cfg: DictConfig) -> StyleGAN2Generator:
    """A fresh generator of the configured shape, or the EMA weights (and shape) of `init_from`."""
    arch = cfg.get("architecture") or {}
    if not cfg.init_from:
        channels = arch.get("channels")
        return build_toy_stylegan2(cfg.lr_mlp, arch.get("n_mlp") or TOY_N_MLP,
                                   {int(r): int(c) for r, c in channels.items()} if channels else None)
    if arch.get("n_mlp") or arch.get("channels"):
        raise ValueError("init_from continues a checkpoint of its own shape; leave architecture.* unset")
    state = torch.load(cfg.init_from, map_location="cpu", weights_only=True)["g_ema"]
    n_mlp, channels = toy_architecture(state)
    g = build_toy_stylegan2(cfg.lr_mlp, n_mlp, channels)
    g.load_state_dict(state)
    return g


def latent_recon_loss(g: StyleGAN2Generator, decoder: nn.Linear, z: Tensor) -> Tensor:
    """Mean squared error of a linear read-out of w = mapping(z) against z_hat = z / RMS(z).

    Why: trained on the image loss alone, the mapping network collapses w onto the few factors that
    move many pixels (window grid, watermark, door and tree sizes become unreadable from w), and the
    synthesis can then never learn them. Keeping every coordinate of z_hat linearly readable from w
    keeps that information available to the synthesis layers.
    """
    return F.mse_loss(decoder(g.style(z)), z_hat(z))


@torch.no_grad()
def fitted_decoder(g: StyleGAN2Generator, seed: int, n: int = 8192) -> nn.Linear:
    """The least-squares read-out w -> z_hat of the starting mapping, so the first gradients mean something."""
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed + 7))
    weight, bias = linear_readout(g.style(z), z_hat(z))
    decoder = nn.Linear(Z_DIM, Z_DIM)
    decoder.weight.copy_(weight)
    decoder.bias.copy_(bias)
    return decoder


class ToyGeneratorModule(pl.LightningModule):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.g = build_generator(cfg)
        self.g_ema = copy.deepcopy(self.g).requires_grad_(False)
        # training-only linear read-out w -> z_hat; not part of the saved generator (see latent_recon_loss)
        self.w_decoder = fitted_decoder(self.g, cfg.seed) if cfg.loss.get("latent_recon") else None
        self.perceptual = EffNetFeatureDistance(min_size=64) if cfg.loss.perceptual > 0 else None
        self.segmenter = load_toy_segmenter() if cfg.eval.segmenter else None
        z_val = torch.randn(cfg.eval.samples, Z_DIM, generator=torch.Generator().manual_seed(cfg.eval.seed))
        x_val, labels_val = render(params_from_z(z_val))  # rendered once; buffers follow the module's device
        self.register_buffer("z_val", z_val)
        self.register_buffer("x_val", x_val)
        self.register_buffer("labels_val", labels_val)
        self.register_buffer("pixel_weight", class_weights(labels_val, cfg.loss.class_balance,
                                                                 cfg.loss.get("class_boost")))
        self.weighted = bool(cfg.loss.class_balance or cfg.loss.get("class_boost"))
        self.val_last: tuple[int, dict[str, float]] | None = None  # (step, figures): saves reuse them

    def training_step(self, z: Tensor, batch_idx: int) -> Tensor:
        x, labels = render(params_from_z(z))
        x = x * 2 - 1
        y = self.g(z)
        err = (y - x).abs()
        l1 = err.mean()
        loss = (err * self.pixel_weight[labels.long()][:, None]).mean() if self.weighted else l1
        if self.perceptual is not None:
            k = self.cfg.loss.perceptual_images
            loss = loss + self.cfg.loss.perceptual * self.perceptual(y[:k], x[:k]).mean()
        logs = {"train/l1": l1}
        if self.w_decoder is not None:
            recon = latent_recon_loss(self.g, self.w_decoder, z)
            loss = loss + self.cfg.loss.latent_recon * recon
            logs["train/latent_recon"] = recon
        self.log_dict({**logs, "train/loss": loss}, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        with torch.no_grad():
            decay = self.cfg.ema_decay if self.global_step > self.cfg.ema_start else 0.0
            for pe, p in zip(self.g_ema.parameters(), self.g.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        step = self.global_step + 1
        if step % self.cfg.eval.every == 0:
            self.val_last = (step, self.validation_figures())
            self.log_dict({f"val/{k}": v for k, v in self.val_last[1].items()}, prog_bar=True)
        if self.cfg.save_every and step % self.cfg.save_every == 0:
            save(self, self.cfg, step, time.time() - self.t0)

    def on_train_start(self) -> None:
        self.t0 = time.time()
        # remembered here: after fit, Lightning moves the module back to the CPU
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else (
            f"cpu ({torch.get_num_threads()} threads)")

    @torch.no_grad()
    def validation_figures(self) -> dict[str, float]:
        """MAE to the ground-truth renders (images in [0, 1]); with the segmenter, mIoU and tops read right."""
        params = params_from_z(self.z_val)  # cheap; score_images needs the tower boxes
        if self.segmenter is not None:
            self.segmenter.eval()  # its BatchNorm must use running statistics, whatever mode the trainer set
        y = torch.cat([self.g_ema(z) for z in self.z_val.split(64)])
        fake = (y.clamp(-1, 1) + 1) / 2
        if self.segmenter is None:
            return {"mae01": float((fake - self.x_val).abs().mean())}
        figures = score_images(fake, self.x_val, self.labels_val, params, self.segmenter)
        return {k: v for k, v in figures.items() if k != "towers"}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.g.parameters()) + (list(self.w_decoder.parameters()) if self.w_decoder else [])
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=tuple(self.cfg.betas))

    def train_dataloader(self) -> DataLoader:
        pool = training_pool(self.z_val.cpu(), self.cfg.get("train_pool"))
        return DataLoader(LatentBatches(self.cfg.batch_size, self.cfg.seed, pool), batch_size=None)


def previous_card(init_from: str | None) -> dict | None:
    """The card of the checkpoint this run continued from (its own `previous` chain included)."""
    if not init_from or not Path(init_from).with_suffix(".json").is_file():
        return None
    old = json.loads(Path(init_from).with_suffix(".json").read_text())
    keep = ("steps", "train_seconds", "device", "config", "val_last", "sha256", "quality", "provenance", "previous")
    return {k: old[k] for k in keep if k in old}


def save(module: ToyGeneratorModule, cfg: DictConfig, steps: int, seconds: float) -> dict:
    """Write the EMA generator (on CPU) and its card next to it; return the card."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = copy.deepcopy(module.g_ema).cpu()
    n_mlp, channels = toy_architecture(g.state_dict())
    tmp = out.with_suffix(".tmp")
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.mean_latent(4096)}, tmp)
    tmp.replace(out)
    card = {
        "what": "toy-world StyleGAN2 generator (rosinality layout), trained to draw render(params_from_z(z))",
        "made_by": "experiments/train_toy_generator.py",
        "architecture": {"size": 64, "style_dim": Z_DIM, "n_mlp": n_mlp, "channels": channels,
                         "lr_mlp": cfg.lr_mlp},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "device": module.device_name,
        "data": "fresh renders of z ~ N(0, I) from seed `seed` every step (rewrite.toyworld)",
        "val_last": module.val_last[1] if module.val_last and module.val_last[0] == steps
        else module.validation_figures(),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
        "previous": previous_card(cfg.init_from),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return card


@hydra.main(version_base="1.3", config_path=CONF, config_name="train_toy_generator")
def main(cfg: DictConfig) -> None:
    if cfg.lr_mlp != TOY_LR_MLP:
        raise ValueError(f"lr_mlp={cfg.lr_mlp} but rewrite.generators.toy_stylegan2 loads with {TOY_LR_MLP}")
    pl.seed_everything(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    module = ToyGeneratorModule(cfg)
    logger = pl.loggers.CSVLogger(cfg.log_dir, name="toy_generator")
    trainer = pl.Trainer(logger=logger, enable_checkpointing=False, **cfg.trainer)
    t0 = time.time()
    trainer.fit(module)
    card = save(module, cfg, trainer.global_step, time.time() - t0)
    print(json.dumps({k: card[k] for k in ("steps", "train_seconds", "val_last", "bytes")}))


if __name__ == "__main__":
    main()
