"""Per-clip embeddings to evaluate: a trained encoder pair, or a baseline in its place.

Every task in `sempair.evaluate` reads an `Embeddings`: the audio and video vector of
every clip of a dataset with the clip's manifest row. Three producers:

- `encode(model, data)`   the trained encoders, frozen (eval mode, running BatchNorm stats),
                          at one of two layers (`layer=`):
                          `projection`  the L2-normalised embeddings the encoders were
                                        trained to align: one shared space (cross-modal);
                          `backbone`    the readout before the projection heads
                                        (`AVEncoders.backbone`), each modality standardised
                                        with the train split's mean and spread, then unit
                                        length (raw readouts are non-negative, so their
                                        cosine is dominated by the common mean). Audio and
                                        video differ in size: `cross_modal=False`;
- `random_encoders(...)`  the same architecture, randomly initialised, BatchNorm statistics
                          taken from the train split (so the baseline is not crippled by
                          unnormalised inputs); `encode` it at either layer;
- `handcrafted(data)`     log-mel statistics and colour/motion statistics, standing in for
                          task-specific features. Audio and video live in different spaces,
                          so cross-modal tasks are undefined for it (`cross_modal=False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from sempair import SempairError, weights
from sempair.config import ModelConfig
from sempair.dataset import ClipDataset
from sempair.models import AVEncoders

GRID = 4   # hand-made video features: colour and motion on a GRID × GRID layout
LAYERS = ("projection", "backbone")   # where `encode` reads the encoders


class EvaluationError(SempairError):
    """Evaluation cannot run on this model or dataset; the message says what to change."""


@dataclass(frozen=True)
class Embeddings:
    audio: np.ndarray      # [N, d_a] float32, rows L2-normalised
    video: np.ndarray      # [N, d_v] float32, rows L2-normalised
    clips: pd.DataFrame    # the dataset's manifest, row i <-> embedding i
    cross_modal: bool      # audio and video share one space (not so for hand-made features)

    def rows(self, split: str) -> np.ndarray:
        """Positions of the clips in `split` (train / val / test)."""
        return np.flatnonzero(self.clips["split"].to_numpy() == split)

    def joint(self) -> np.ndarray:
        """[N, d_a + d_v]: both modalities, unit length (one vector per clip)."""
        return _unit(np.concatenate([self.audio, self.video], axis=1))


def load_encoders(model_dir: str | Path) -> tuple[AVEncoders, dict]:
    """A trained model folder -> (encoders in eval mode, the weights file's metadata)."""
    path = Path(model_dir) / "model.pt"
    if not path.is_file():
        raise EvaluationError(f"{path} not found: pass the folder `sempair train` wrote")
    saved = weights.load(path)
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in saved["model_config"].items()})
    model = AVEncoders(cfg)
    model.load_state_dict(saved["model"])
    return model.eval(), saved


def check_features(saved: dict, data: ClipDataset) -> None:
    """The model must see clips cut and featurised the way it was trained."""
    ours = data.meta["features"], data.meta["ingest"]["clip_seconds"]
    theirs = saved["features"], saved["clip_seconds"]
    if ours != theirs:
        raise EvaluationError(
            f"the model was trained on features {theirs[0]} with {theirs[1]} s clips, but "
            f"{data.root} has {ours[0]} with {ours[1]} s clips; ingest the recordings again "
            "with the model's features (--set features.KEY=VALUE) or evaluate a model "
            "trained on this dataset")


def encode(model: AVEncoders, data: ClipDataset, batch_size: int,
           layer: str = "projection") -> Embeddings:
    """Embed every clip of `data` with frozen encoders at `layer` (see LAYERS)."""
    if layer not in LAYERS:
        raise EvaluationError(f"unknown layer {layer!r}: pass one of {', '.join(LAYERS)}")
    return encode_layers(model, data, batch_size)[layer]


@torch.no_grad()
def encode_layers(model: AVEncoders, data: ClipDataset,
                  batch_size: int) -> dict[str, Embeddings]:
    """Every clip of `data` at every layer of LAYERS, from one pass of the frozen encoders."""
    model.eval()
    parts = {layer: ([], []) for layer in LAYERS}
    for start in range(0, len(data), batch_size):
        out = model.layers(*data.batch(np.arange(start, min(start + batch_size, len(data)))))
        for layer, (audio, video) in parts.items():
            audio.append(out[layer][0].float())     # [B, dim] or [B, F_a]
            video.append(out[layer][1].float())     # [B, dim] or [B, F_v]
    clips = data.manifest.reset_index(drop=True)
    train = clips["split"].to_numpy() == "train"
    audio, video = (torch.cat(x).numpy() for x in parts["projection"])
    backbone = [_unit(_standardise(torch.cat(x).numpy(), train)) for x in parts["backbone"]]
    return {"projection": Embeddings(audio, video, clips, cross_modal=True),
            "backbone": Embeddings(*backbone, clips, cross_modal=False)}


@torch.no_grad()
def random_encoders(cfg: ModelConfig, seed: int, data: ClipDataset,
                    batch_size: int) -> AVEncoders:
    """Randomly initialised encoders whose BatchNorm statistics come from the train split."""
    torch.manual_seed(seed)
    model = AVEncoders(cfg).train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                      # cumulative average over all batches
    train = np.flatnonzero(data.manifest["split"].to_numpy() == "train")
    for start in range(0, len(train), batch_size):
        model(*data.batch(train[start:start + batch_size]))
    return model.eval()


def handcrafted(data: ClipDataset, batch_size: int) -> Embeddings:
    """Log-mel statistics (audio) and colour/motion statistics (video), standardised with
    the train split's mean and spread."""
    audio, video = [], []
    for start in range(0, len(data), batch_size):
        a, v = data.batch(np.arange(start, min(start + batch_size, len(data))))
        audio.append(_audio_statistics(a))
        video.append(_video_statistics(v))
    audio, video = np.concatenate(audio), np.concatenate(video)
    train = data.manifest["split"].to_numpy() == "train"
    return Embeddings(_unit(_standardise(audio, train)), _unit(_standardise(video, train)),
                      data.manifest.reset_index(drop=True), cross_modal=False)


def _audio_statistics(logmel: torch.Tensor) -> np.ndarray:
    """[B, n_mels, T] -> [B, 2·n_mels]: per-band mean and spread over time."""
    return torch.cat([logmel.mean(2), logmel.std(2)], 1).numpy()


def _video_statistics(frames: torch.Tensor) -> np.ndarray:
    """[B, T, 3, H, W] uint8 -> [B, 6 + 4·GRID²]: colour mean and spread, colour per grid
    cell, and motion (mean absolute frame difference) per grid cell."""
    x = frames.float() / 255
    b, t, c, h, w = x.shape
    colour = torch.cat([x.mean((1, 3, 4)), x.std((1, 3, 4))], 1)                 # [B, 6]
    cells = x[..., :h // GRID * GRID, :w // GRID * GRID].reshape(
        b, t, c, GRID, h // GRID, GRID, w // GRID)
    layout = cells.mean((1, 4, 6)).reshape(b, -1)                                # [B, 3·G²]
    luma = cells.mean(2)                                          # [B, T, G, h/G, G, w/G]
    motion = (luma[:, 1:] - luma[:, :-1]).abs().mean((1, 3, 5)).reshape(b, -1) \
        if t > 1 else torch.zeros(b, GRID * GRID)                                # [B, G²]
    return torch.cat([colour, layout, motion], 1).numpy()


def _standardise(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    mean, std = x[reference].mean(0), x[reference].std(0)
    return ((x - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
