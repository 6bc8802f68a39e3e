"""The trained encoders as TorchScript: what serving runs, without sempair's model code.

    export_encoders("runs/model", "runs/bundle")   # -> audio_encoder.pt, video_encoder.pt
    check_export("runs/model", "runs/bundle")      # eager vs exported, max |diff| <= atol

    audio_encoder.pt  log-mel [B, n_mels, T_a] float32 -> [B, dim] (unit rows)
    video_encoder.pt  frames  [B, T, 3, H, W] uint8    -> [B, dim] (unit rows)

Both are scripted in eval mode (BatchNorm running statistics, as evaluation embeds), so
`torch.jit.load` alone runs them; tracing is the fallback for a module that cannot be
scripted (same graph for these convolutional encoders, which have no data-dependent flow).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from sempair import SempairError
from sempair.evaluate.embeddings import load_encoders

ENCODERS = {"audio": "audio_encoder.pt", "video": "video_encoder.pt"}


class ExportError(SempairError):
    """The exported encoders do not reproduce the trained ones; the message says by how much."""


def input_shapes(saved: dict) -> dict[str, tuple[int, ...]]:
    """One clip's input shapes from the weights file's feature config:
    audio (n_mels, T_a), video (T, 3, H, W)."""
    f, seconds = saved["features"], saved["clip_seconds"]
    hop_length = round(f["hop_seconds"] * f["sample_rate"])
    mel_frames = round(seconds * f["sample_rate"]) // hop_length
    return {"audio": (f["n_mels"], mel_frames),
            "video": (round(seconds * f["fps"]), 3, f["height"], f["width"])}


def example_inputs(saved: dict, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs at the model's shapes: log-mel-like floats and uint8 frames."""
    shapes = input_shapes(saved)
    generator = torch.Generator().manual_seed(seed)
    logmel = torch.randn((batch, *shapes["audio"]), generator=generator) * 4 - 6
    frames = torch.randint(0, 256, (batch, *shapes["video"]), generator=generator,
                           dtype=torch.uint8)
    return {"audio": logmel, "video": frames}


def export_encoders(model_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write TorchScript audio_encoder.pt and video_encoder.pt into out_dir."""
    model, saved = load_encoders(model_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = example_inputs(saved, batch=2)
    paths = {}
    for kind, name in ENCODERS.items():
        encoder = getattr(model, kind).eval()
        with _quiet_jit():
            _to_torchscript(encoder, examples[kind]).save(str(out_dir / name))
        paths[kind] = out_dir / name
    return paths


@contextmanager
def _quiet_jit():
    """torch 2.13 marks torch.jit deprecated; TorchScript is still what TorchServe loads
    without the model's code, so the warning is silenced here and only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        yield


def _to_torchscript(encoder: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with _quiet_jit():
        try:
            return torch.jit.script(encoder)
        except Exception:    # a layer TorchScript cannot compile: trace the fixed graph
            with torch.no_grad():
                return torch.jit.trace(encoder, example)


def load_exported(out_dir: str | Path) -> dict[str, torch.jit.ScriptModule]:
    """The exported encoders, in eval mode, on the CPU."""
    with _quiet_jit():
        return {kind: torch.jit.load(str(Path(out_dir) / name), map_location="cpu").eval()
                for kind, name in ENCODERS.items()}


@torch.no_grad()
def check_export(model_dir: str | Path, out_dir: str | Path, atol: float = 1e-5,
                 inputs: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Eager vs exported on `inputs` (default: random ones at the model's shapes);
    returns {kind: max abs difference}, raises ExportError above atol."""
    model, saved = load_encoders(model_dir)
    inputs = inputs if inputs is not None else example_inputs(saved)
    exported = load_exported(out_dir)
    diffs = {kind: float((getattr(model, kind)(inputs[kind]) -
                          exported[kind](inputs[kind])).abs().max())
             for kind in ENCODERS}
    bad = {kind: diff for kind, diff in diffs.items() if not diff <= atol}
    if bad:
        raise ExportError(f"exported encoders differ from {model_dir} by {bad} (> {atol}); "
                          "export again with the torch version that serves them, or file a "
                          "bug with the model folder")
    return diffs
