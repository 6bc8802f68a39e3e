"""Weights files (model.pt, checkpoint.pt): torch's zip format, read without running code.

A `torch.load` with `weights_only=False` unpickles arbitrary objects, so a crafted file
fetched from a bucket runs code the moment it is loaded. Every weights file sempair reads
goes through `load`, which only rebuilds tensors and plain containers (dict, list, tuple,
str, numbers, None); what the weights need to run (model config, feature parameters)
travels as plain values inside the same file, and numpy arrays are stored as tensors.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from sempair import SempairError


class WeightsError(SempairError):
    """A weights file cannot be read safely; the message names the file and the fix."""


def load(path: str | Path) -> dict:
    """The contents of a weights file, on the CPU, with no code run while reading it."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1][:200]
        raise WeightsError(
            f"{path} holds more than tensors and plain values ({reason}), so it was not "
            "loaded: a weights file that runs code when read is how a tampered model "
            "attacks. Use a model folder written by `sempair train`, and check who can "
            "write to where it came from") from None
    except (RuntimeError, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise WeightsError(f"{path} is not a readable weights file ({error}); it is "
                           "truncated or corrupt: copy or train it again") from None
    if not isinstance(saved, dict):
        raise WeightsError(f"{path} holds a {type(saved).__name__}, not sempair's weights "
                           "dictionary; pass the model.pt that `sempair train` wrote")
    return saved


def save(content: dict, path: Path) -> None:
    """Write `content` (tensors and plain values only) atomically: readers see the old
    file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(content, tmp)
    os.replace(tmp, path)
