"""Train the toy-world StyleGAN2 to draw render(params_from_z(z)) (L1 + perceptual regression).

    python experiments/train_toy_generator.py                       # conf/train_toy_generator.yaml
    python experiments/train_toy_generator.py trainer.max_time=00:00:05:00 out=/tmp/toy.pt

Every batch is freshly rendered from seeded z, so there is no dataset on disk; held-out z come
from another seed. Writes the EMA generator (`g_ema`, `latent_avg`) and a JSON card.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from rewrite.generators.toy_stylegan2 import TOY_CHANNELS, TOY_LR_MLP, TOY_N_MLP, build_toy_stylegan2
from rewrite.perceptual import EffNetFeatureDistance
from rewrite.toyworld import Z_DIM, params_from_z, render

CONF = str(Path(__file__).resolve().parent.parent / "conf")


class RenderedBatches(IterableDataset):
    """Endless (z, image in [-1, 1]) batches from one seeded stream."""

    def __init__(self, batch_size: int, seed: int) -> None:
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self):  # noqa: ANN204
        g = torch.Generator().manual_seed(self.seed)
        while True:
            z = torch.randn(self.batch_size, Z_DIM, generator=g)
            image, _ = render(params_from_z(z))
            yield z, image * 2 - 1


class ToyGeneratorModule(pl.LightningModule):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.g = build_toy_stylegan2(cfg.lr_mlp)
        if cfg.init_from:  # continue an earlier run (its EMA weights)
            self.g.load_state_dict(torch.load(cfg.init_from, map_location="cpu", weights_only=True)["g_ema"])
        self.g_ema = copy.deepcopy(self.g).requires_grad_(False)
        self.perceptual = EffNetFeatureDistance(min_size=64) if cfg.loss.perceptual > 0 else None
        zv = torch.randn(cfg.eval.samples, Z_DIM, generator=torch.Generator().manual_seed(cfg.eval.seed))
        self.z_val = zv
        self.x_val = render(params_from_z(zv))[0]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        z, x = batch
        y = self.g(z)
        l1 = (y - x).abs().mean()
        loss = l1
        if self.perceptual is not None:
            k = self.cfg.loss.perceptual_images
            loss = loss + self.cfg.loss.perceptual * self.perceptual(y[:k], x[:k]).mean()
        self.log_dict({"train/l1": l1, "train/loss": loss}, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        with torch.no_grad():
            decay = self.cfg.ema_decay if self.global_step > self.cfg.ema_start else 0.0
            for pe, p in zip(self.g_ema.parameters(), self.g.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        if (self.global_step + 1) % self.cfg.eval.every == 0:
            self.log("val/mae01", self.val_mae(), prog_bar=True)

    @torch.no_grad()
    def val_mae(self) -> float:
        """Mean absolute error to the ground-truth renders, images in [0, 1] (the quality bar's unit)."""
        y = torch.cat([self.g_ema(z) for z in self.z_val.split(64)])
        return float(((y.clamp(-1, 1) + 1) / 2 - self.x_val).abs().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.g.parameters(), lr=self.cfg.lr, betas=tuple(self.cfg.betas))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RenderedBatches(self.cfg.batch_size, self.cfg.seed), batch_size=None)


def previous_card(init_from: str | None) -> dict | None:
    """The card of the checkpoint this run continued from (its own `previous` chain included)."""
    if not init_from or not Path(init_from).with_suffix(".json").is_file():
        return None
    old = json.loads(Path(init_from).with_suffix(".json").read_text())
    keep = ("steps", "train_seconds", "sha256", "quality", "previous")
    return {k: old[k] for k in keep if k in old}


@hydra.main(version_base="1.3", config_path=CONF, config_name="train_toy_generator")
def main(cfg: DictConfig) -> None:
    if cfg.lr_mlp != TOY_LR_MLP:
        raise ValueError(f"lr_mlp={cfg.lr_mlp} but rewrite.generators.toy_stylegan2 loads with {TOY_LR_MLP}")
    pl.seed_everything(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    module = ToyGeneratorModule(cfg)
    logger = pl.loggers.CSVLogger(cfg.log_dir, name="toy_generator")
    trainer = pl.Trainer(logger=logger, enable_checkpointing=False, **cfg.trainer)
    t0 = time.time()
    trainer.fit(module)
    seconds = time.time() - t0
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = module.g_ema
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.mean_latent(4096)}, out)
    card = {
        "what": "toy-world StyleGAN2 generator (rosinality layout), trained to draw render(params_from_z(z))",
        "made_by": "experiments/train_toy_generator.py",
        "architecture": {"size": 64, "style_dim": Z_DIM, "n_mlp": TOY_N_MLP, "channels": TOY_CHANNELS,
                         "lr_mlp": cfg.lr_mlp},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "steps": trainer.global_step,
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "data": "fresh renders of z ~ N(0, I) from seed `seed` every step (rewrite.toyworld)",
        "val_mae01_last": module.val_mae(),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
    }
    card["previous"] = previous_card(cfg.init_from)
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(json.dumps({k: card[k] for k in ("steps", "train_seconds", "val_mae01_last", "bytes")}))


if __name__ == "__main__":
    main()
