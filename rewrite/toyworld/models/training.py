"""Train the toy-world generator to draw render(params_from_z(z)) (class-weighted L1 + perceptual regression,
optionally a patch-adversarial term for crisp small parts).

    python -m rewrite.toyworld.models.training                                  # rewrite/conf/train_toy_generator.yaml
    python -m rewrite.toyworld.models.training trainer.max_time=00:00:05:00 out=/tmp/toy.pt
    python -m rewrite.toyworld.models.training resume=true                      # go on from out's training state

Every batch is freshly rendered from seeded z on the training device, so there is no dataset on
disk; held-out z come from another seed. The L1 term weights each pixel by the rarity of its true
class (`loss.class_balance`), so windows, tower tops and the watermark are not averaged away by the
large sky and ground areas. Every `save_every` steps (and at the end) it writes the EMA generator
(`out`: `g_ema`, `latent_avg`, `architecture`), its JSON card, and the full training state
(`out` with suffix `.train.pt`: both generators, the optimizer, the step), so a run cut short
resumes where it stopped; without that file (it is not committed), `resume=true` continues from the
saved EMA generator with a fresh optimizer.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from rewrite.core.files import atomic_write, file_sha256
from rewrite.core.perceptual import EffNetFeatureDistance
from rewrite.toyworld.models.feature_paste import Paste, apply_pastes, draw_pastes, pasted_at
from rewrite.toyworld.models.generator import TOY_SIZE, ToySceneGenerator, build_toy_generator
from rewrite.toyworld.models.quality import score_images
from rewrite.toyworld.models.segmenter import load_toy_segmenter
from rewrite.toyworld.world.labels import CLASSES
from rewrite.toyworld.world.params import Z_DIM, params_from_z
from rewrite.toyworld.world.render import render

CONF = str(Path(__file__).resolve().parents[2] / "conf")


class LatentBatches(IterableDataset):
    """Endless z batches from one seeded stream (rendered later, on the training device)."""

    def __init__(self, batch_size: int, seed: int) -> None:
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self) -> Iterator[Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield torch.randn(self.batch_size, Z_DIM, generator=g)


def class_weights(labels: Tensor, exponent: float, boost: Mapping[str, float] | None = None) -> Tensor:
    """Per-class pixel weights ∝ frequency^-exponent (times `boost[class]`), normalised so an average pixel weighs 1."""
    unknown = set(boost or {}) - set(CLASSES)
    if unknown:
        raise ValueError(f"loss.class_boost names unknown classes {sorted(unknown)}; classes: {', '.join(CLASSES)}")
    freq = torch.bincount(labels.flatten(), minlength=len(CLASSES)).double() / labels.numel()
    w = (freq + 1e-4) ** -exponent
    w = w * torch.tensor([float((boost or {}).get(c, 1.0)) for c in CLASSES], dtype=torch.float64)
    return (w / (freq * w).sum()).float()


def edge_l1(y: Tensor, x: Tensor) -> Tensor:
    """L1 between the images' horizontal and vertical pixel differences: a blurred edge pays for its whole step."""
    return ((y.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (y.diff(dim=-2) - x.diff(dim=-2)).abs().mean()) / 2


class PatchDiscriminator(nn.Module):
    """Tells renders from generated images per patch (a logit map at 1/8 of the image size).

    Why: L1 and edge terms average an unsure edge into a soft one; a discriminator pays for softness itself,
    so small parts (windows, doors) come out crisp. Spectral norm keeps the small adversarial term stable.
    """

    def __init__(self, channels: list[int] | tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.utils.spectral_norm(nn.Conv2d(c_in, c, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.utils.spectral_norm(nn.Conv2d(c_in, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def init_weights(g: ToySceneGenerator, path: str | Path) -> dict:
    """Start `g` from another toy generator's EMA weights (a warm start); return the card's note of it.

    Parameters the other generator lacks may only be the constant style, which starts at its mean w.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = g.load_state_dict(ckpt["g_ema"], strict=False)
    if unexpected or set(missing) - {"fine_style"}:
        raise ValueError(f"init_from={path}: its weights do not fit this architecture "
                         f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    if "fine_style" in missing:
        with torch.no_grad():
            g.fine_style.copy_(ckpt["latent_avg"].reshape(-1) if ckpt.get("latent_avg") is not None
                               else g.mean_latent(4096)[0])
    card = Path(path).with_suffix(".json")
    steps = json.loads(card.read_text()).get("steps") if card.is_file() else None
    return {"note": f"initialised from {Path(path).name} (sha256 {file_sha256(path)[:16]}, {steps} steps); "
                    "steps below count from 0 again"}


def layer_scale(g: ToySceneGenerator, name: str) -> tuple[nn.Module, int]:
    """The synthesis layer `convs.K` and its image pixels per feature cell (convs.2j/2j+1 draw 2**(j+3) px)."""
    prefix, _, k = name.partition(".")
    if prefix != "convs" or not k.isdigit() or int(k) >= len(g.convs):
        raise ValueError(f"paste.layers: {name!r} is not a synthesis layer convs.0 .. convs.{len(g.convs) - 1}")
    return g.convs[int(k)], TOY_SIZE // 2 ** (int(k) // 2 + 3)


def paste_targets(x: Tensor, labels: Tensor, pastes: list[Paste], scale: int) -> tuple[Tensor, Tensor]:
    """The renders and label maps with each feature paste done as a pixel paste (the image it should draw)."""
    pixel = [p.scaled(scale) for p in pastes]
    return apply_pastes(x, pixel), apply_pastes(labels[:, None], pixel)[:, 0]


def train_state_path(out: str | Path) -> Path:
    """Where the resumable training state of the generator written to `out` lives."""
    return Path(out).with_suffix(".train.pt")


class ToyGeneratorModule(pl.LightningModule):
    """The generator, its EMA copy and the regression loss against the renderer."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.g = build_toy_generator(OmegaConf.to_container(cfg.architecture))
        self.g_ema = copy.deepcopy(self.g).requires_grad_(False)
        self.step_offset, self.seconds_before = 0, 0.0
        self.segments: list[dict] = []  # one entry per invocation that trained these weights
        self.resumed_state: dict | None = None
        if cfg.resume and train_state_path(cfg.out).is_file():
            state = torch.load(train_state_path(cfg.out), map_location="cpu", weights_only=True)
            saved_out = state.get("out_sha256")  # the generator this state wrote last
            if saved_out and Path(cfg.out).is_file() and file_sha256(cfg.out) != saved_out:
                raise ValueError(f"{train_state_path(cfg.out)} belongs to another generator than {cfg.out} "
                                 "(it was replaced since); delete the training state to continue from the "
                                 "generator itself")
            self.g.load_state_dict(state["g"])
            self.g_ema.load_state_dict(state["g_ema"])
            self.step_offset, self.seconds_before = int(state["step"]), float(state["seconds"])
            self.segments = list(state.get("segments", []))
            self.resumed_state = state
        elif cfg.resume and Path(cfg.out).is_file():  # only the saved generator (e.g. a fresh clone): its EMA
            # weights start both copies and Adam starts afresh; the card gives the history
            card_path = Path(cfg.out).with_suffix(".json")
            if not card_path.is_file():
                raise FileNotFoundError(f"resume=true: {cfg.out} has no card {card_path} to continue its history")
            state = torch.load(cfg.out, map_location="cpu", weights_only=True)["g_ema"]
            self.g.load_state_dict(state)
            self.g_ema.load_state_dict(state)
            card = json.loads(card_path.read_text())
            self.step_offset, self.seconds_before = int(card["steps"]), float(card["train_seconds"])
            self.segments = [*card.get("segments", []), {"note": "resumed from the saved EMA generator; "
                                                                 "optimizer state restarted"}]
        elif cfg.resume:
            raise FileNotFoundError(f"resume=true but there is nothing to resume: neither "
                                    f"{train_state_path(cfg.out)} nor {cfg.out} exists")
        elif cfg.get("init_from"):
            self.segments = [init_weights(self.g, cfg.init_from)]
            self.g_ema.load_state_dict(self.g.state_dict())
        elif getattr(self.g, "scene_styles", None) is not None:  # the constant style starts at the mean w
            with torch.no_grad():
                self.g.fine_style.copy_(self.g.mean_latent(4096)[0])
                self.g_ema.fine_style.copy_(self.g.fine_style)
        self.perceptual = EffNetFeatureDistance(min_size=64) if cfg.loss.perceptual > 0 else None
        self.disc: PatchDiscriminator | None = None  # with loss.adversarial > 0; stepped by its own Adam, which
        self.disc_opt: torch.optim.Optimizer | None = None  # Lightning does not see (its step count stays G's)
        if cfg.loss.get("adversarial"):
            self.disc = PatchDiscriminator(list(cfg.discriminator.channels))
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.discriminator.lr, betas=(0.5, 0.99))
            saved = (self.resumed_state or {}).get("disc")
            if saved is not None:
                self.disc.load_state_dict(saved["weights"])
                self.disc_opt.load_state_dict(saved["opt"])
        self.segmenter = load_toy_segmenter() if cfg.eval.segmenter else None
        z_val = torch.randn(cfg.eval.samples, Z_DIM, generator=torch.Generator().manual_seed(cfg.eval.seed))
        x_val, labels_val = render(params_from_z(z_val))  # rendered once; buffers follow the module's device
        self.register_buffer("z_val", z_val)
        self.register_buffer("x_val", x_val)
        self.register_buffer("labels_val", labels_val)
        self.register_buffer("pixel_weight", class_weights(labels_val, cfg.loss.class_balance,
                                                                 cfg.loss.get("class_boost")))
        self.weighted = bool(cfg.loss.class_balance or cfg.loss.get("class_boost"))
        self.paste = cfg.get("paste") or {}
        for name in self.paste.get("layers", []) if self.paste.get("fraction") else []:
            layer_scale(self.g, name)  # a bad name fails here, not at the first step
        self.val_last: tuple[int, dict[str, float]] | None = None  # (step, figures): saves reuse them

    @property
    def step(self) -> int:
        """Optimizer steps taken, those of resumed runs included."""
        return self.step_offset + self.global_step

    def lr_at(self, step: int) -> float:
        """`lr`, or the value of the last `lr_schedule` entry (step: lr) at or before `step`."""
        later = {int(k): float(v) for k, v in (self.cfg.get("lr_schedule") or {}).items() if int(k) <= step}
        return later[max(later)] if later else float(self.cfg.lr)

    def on_train_batch_start(self, batch: Tensor, batch_idx: int) -> None:
        lr = self.lr_at(self.step)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr

    def pastes_at(self, g: ToySceneGenerator, name: str, batch: int, count: int,
                  generator: torch.Generator) -> tuple[nn.Module, list[Paste], int]:
        """Layer `name` of `g`, `count` random pastes at it (sides from `paste.min_pixels` / `max_pixels`, in its
        cells) and its pixels per cell."""
        layer, scale = layer_scale(g, name)
        res = TOY_SIZE // scale
        cells = [max(1, min(res, int(self.paste[k]) // scale)) for k in ("min_pixels", "max_pixels")]
        return layer, draw_pastes(batch, count, res, *cells, generator=generator), scale

    def draw_paste(self, batch: int, generator: torch.Generator, count: int) -> tuple[nn.Module, list[Paste], int]:
        """`pastes_at` a random layer of `paste.layers`."""
        names = list(self.paste["layers"])
        return self.pastes_at(self.g, names[int(torch.randint(len(names), (), generator=generator))], batch, count,
                              generator)

    def training_step(self, z: Tensor, batch_idx: int) -> Tensor:
        x, labels = render(params_from_z(z))
        x = x * 2 - 1
        count = round(float(self.paste.get("fraction", 0.0)) * len(z))
        if count:  # the first `count` samples get another sample's features pasted at a random layer and box
            if not hasattr(self, "paste_rng"):
                self.paste_rng = torch.Generator().manual_seed(self.data_seed + 17)
            layer, pastes, scale = self.draw_paste(len(z), self.paste_rng, count)
            x, labels = paste_targets(x, labels, pastes, scale)
            with pasted_at(layer, pastes):
                y = self.g(z)
        else:
            pastes, scale = [], 1
            y = self.g(z)
        err = (y - x).abs()
        l1 = err.mean()
        loss = (err * self.pixel_weight[labels.long()][:, None]).mean() if self.weighted else l1
        if pastes and float(self.paste.get("weight", 1.0)) != 1.0:  # the pasted boxes are a small share of the
            # pixels: `paste.weight` - 1 more of the (class-weighted) L1 inside them
            box = torch.zeros_like(err[:, :1])
            for p in (q.scaled(scale) for q in pastes):
                box[p.dst, :, p.by:p.by + p.h, p.bx:p.bx + p.w] = 1
            w = self.pixel_weight[labels.long()][:, None] if self.weighted else 1.0
            loss = loss + (float(self.paste["weight"]) - 1) * (err * w * box).mean()
        if self.cfg.loss.get("edges"):
            loss = loss + self.cfg.loss.edges * edge_l1(y, x)
        if self.perceptual is not None:
            k = self.cfg.loss.perceptual_images
            loss = loss + self.cfg.loss.perceptual * self.perceptual(y[:k], x[:k]).mean()
        logs = {"train/l1": l1}
        if self.disc is not None:
            logs["train/d_loss"] = self.discriminator_step(x, y.detach())  # real: the (pixel-pasted) renders
            self.disc.requires_grad_(False)  # G's adversarial term must not leave gradients in D
            adversarial = F.softplus(-self.disc(y)).mean()  # non-saturating: G wants its patches read as renders
            self.disc.requires_grad_(True)
            loss = loss + self.cfg.loss.adversarial * adversarial
            logs["train/adversarial"] = adversarial
        self.log_dict({**logs, "train/loss": loss}, prog_bar=True)
        return loss

    def discriminator_step(self, real: Tensor, fake: Tensor) -> Tensor:
        """One Adam step of the patch discriminator (logistic loss: renders 1, generated images 0)."""
        assert self.disc is not None and self.disc_opt is not None
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss = F.softplus(-self.disc(real)).mean() + F.softplus(self.disc(fake)).mean()
        d_loss.backward()
        self.disc_opt.step()
        return d_loss.detach()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        with torch.no_grad():
            decay = self.cfg.ema_decay if self.step > self.cfg.ema_start else 0.0
            for pe, p in zip(self.g_ema.parameters(), self.g.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        if self.step % self.cfg.eval.every == 0:
            self.val_last = (self.step, self.validation_figures())
            self.log_dict({f"val/{k}": v for k, v in self.val_last[1].items()}, prog_bar=True)
        if self.cfg.save_every and self.step % self.cfg.save_every == 0:
            save(self, self.cfg)

    def on_train_start(self) -> None:
        self.t0 = time.time()
        # remembered here: after fit, Lightning moves the module back to the CPU
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else (
            f"cpu ({torch.get_num_threads()} threads)")

    def segment_history(self) -> list[dict]:
        """Earlier invocations plus this one: where each started, how far it went, on what."""
        this = {"start_step": self.step_offset, "end_step": self.step,
                "seconds": round(self.seconds - self.seconds_before, 1), "device": self.device_name,
                "batch_size": self.cfg.batch_size, "lr": self.cfg.lr,
                "lr_schedule": OmegaConf.to_container(self.cfg.get("lr_schedule") or {}), "data_seed": self.data_seed,
                "loss": OmegaConf.to_container(self.cfg.loss, resolve=True)}
        return [*self.segments, this]

    @property
    def data_seed(self) -> int:
        """Seed of this invocation's z stream: a resumed run draws fresh batches, not the first ones again."""
        return self.cfg.seed + 1_000_003 * self.step_offset

    @property
    def seconds(self) -> float:
        """Training wall time, resumed runs included."""
        return self.seconds_before + time.time() - self.t0

    @torch.no_grad()
    def validation_figures(self) -> dict[str, float]:
        """MAE to the ground-truth renders (images in [0, 1]); with the segmenter, the quality bar's figures."""
        params = params_from_z(self.z_val)  # cheap; score_images needs the tower boxes
        if self.segmenter is not None:
            self.segmenter.eval()  # its BatchNorm must use running statistics, whatever mode the trainer set
        fake = torch.cat([(self.g_ema(z).clamp(-1, 1) + 1) / 2 for z in self.z_val.split(64)])
        if self.segmenter is None:
            return {"mae01": float((fake - self.x_val).abs().mean()), **self.paste_figures()}
        figures = score_images(fake, self.x_val, self.labels_val, params, self.segmenter)
        recall = figures.pop("rule_source_recall")
        figures.pop("towers")
        return {**figures, **{f"recall_{k}": v for k, v in recall.items()}, **self.paste_figures()}

    @torch.no_grad()
    def paste_figures(self) -> dict[str, float]:
        """MAE (images in [0, 1]) of feature pastes at each paste layer against the pixel pastes of the renders,
        on fixed boxes (eval.seed) in the validation scenes; empty when training without pastes."""
        if not self.paste.get("fraction"):
            return {}
        figures = {}
        for name in self.paste["layers"]:
            n = min(64, len(self.z_val))
            layer, pastes, scale = self.pastes_at(self.g_ema, name, n, n,
                                                  torch.Generator().manual_seed(self.cfg.eval.seed))
            target, _ = paste_targets(self.x_val[:n], self.labels_val[:n], pastes, scale)
            with pasted_at(layer, pastes):
                fake = (self.g_ema(self.z_val[:n]).clamp(-1, 1) + 1) / 2
            figures[f"paste_mae_{name}"] = float((fake - target).abs().mean())
        return figures

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = torch.optim.Adam(self.g.parameters(), lr=self.cfg.lr, betas=tuple(self.cfg.betas))
        if self.resumed_state is not None:
            opt.load_state_dict(self.resumed_state["opt"])  # restores the saved lr and betas too:
            for group in opt.param_groups:  # this invocation's settings win, as its card says
                group["lr"], group["betas"] = self.cfg.lr, tuple(self.cfg.betas)
            self.resumed_state = None
        return opt

    def train_dataloader(self) -> DataLoader:
        return DataLoader(LatentBatches(self.cfg.batch_size, self.data_seed),
                          batch_size=None)


def save(module: ToyGeneratorModule, cfg: DictConfig) -> dict:
    """Write the EMA generator (on CPU), its card and the resumable training state; return the card."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g: ToySceneGenerator = copy.deepcopy(module.g_ema).cpu()
    architecture = {**OmegaConf.to_container(cfg.architecture)}
    architecture["channels"] = {int(r): int(c) for r, c in architecture["channels"].items()}
    generator = {"g_ema": g.state_dict(), "latent_avg": g.mean_latent(4096), "architecture": architecture}
    atomic_write(out, lambda tmp: torch.save(generator, tmp))
    state = {"g": {k: v.cpu() for k, v in module.g.state_dict().items()}, "g_ema": g.state_dict(),
             "opt": module.optimizers().optimizer.state_dict(), "step": module.step, "seconds": module.seconds,
             "segments": module.segment_history(), "out_sha256": file_sha256(out)}
    if module.disc is not None:
        state["disc"] = {"weights": {k: v.cpu() for k, v in module.disc.state_dict().items()},
                         "opt": module.disc_opt.state_dict()}
    atomic_write(train_state_path(out), lambda tmp: torch.save(state, tmp))
    card = {
        "what": "toy-world StyleGAN2 generator, w = learned map of the explicit scene code of z; trained to "
                "draw render(params_from_z(z))",
        "made_by": "python -m rewrite.toyworld.models.training",
        "architecture": architecture,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "steps": module.step,
        "train_seconds": round(module.seconds, 1),
        "device": module.device_name,
        "data": "fresh renders of z ~ N(0, I) every step (rewrite.toyworld); a resumed invocation draws from "
                "seed + 1,000,003 x its start step",
        "segments": module.segment_history(),
        "val_last": module.val_last[1] if module.val_last and module.val_last[0] == module.step
        else module.validation_figures(),
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
    }
    atomic_write(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(card, indent=2)))
    return card


@hydra.main(version_base="1.3", config_path=CONF, config_name="train_toy_generator")
def main(cfg: DictConfig) -> None:
    pl.seed_everything(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    module = ToyGeneratorModule(cfg)
    logger = pl.loggers.CSVLogger(cfg.log_dir, name="toy_generator")
    trainer = pl.Trainer(logger=logger, enable_checkpointing=False, **cfg.trainer)
    trainer.fit(module)
    card = save(module, cfg)
    print(json.dumps({k: card[k] for k in ("steps", "train_seconds", "val_last", "bytes")}))


if __name__ == "__main__":
    main()
