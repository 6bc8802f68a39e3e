"""The trainer: self-supervised audio-visual training, temporal or EPG, one process or DDP.

    sempair train DATASET OUT                                  # one process
    torchrun --nproc_per_node 2 -m sempair.cli train DATASET OUT   # DDP (gloo on CPU)

One epoch, read top to bottom in `train`: (EPG, after warm-up) mine partners over the
dataset bank -> sample batches that bring partners together -> per step: encode, gather
embeddings across ranks (and write them into the bank), build the positive mask
(temporal OR mined), symmetric contrastive loss, clip, step -> log -> atomic checkpoint.
`--resume` continues from the last checkpoint with exactly the losses an uninterrupted
run would have had.

Labels, when the dataset has them, only feed diagnostics in the log (precision of mined
positives, false-negative rate); self-supervised training never reads them. The one
exception is `pairing=supervised`, the upper bound that evaluation compares against:
there clips with the same label are the positives.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from sempair import SempairError, __version__, json_safe, weights
from sempair.augment import augment
from sempair.augment import generator as augment_rng
from sempair.config import Config
from sempair.dataset import ClipDataset
from sempair.lineage import build_card, validation_record, write_card
from sempair.losses import av_loss
from sempair.models import AVEncoders
from sempair.pairing import (
    PartnerBatchSampler,
    Partners,
    label_partners,
    mine_batch,
    mine_dataset,
    pair_quality,
    temporal_partners,
    temporal_positives,
)

CHECKPOINT, LOG, WEIGHTS = "checkpoint.pt", "log.jsonl", "model.pt"
HISTORY_COLUMNS = ("epoch", "step", "loss", "mined_precision", "base_rate",
                   "false_negative_rate", "clips_per_second")
# what a resumed run must share with its checkpoint
RESUME_SECTIONS = ("model", "train", "augment")


class TrainingError(SempairError):
    """Training cannot go on; the message says why and what to change."""


@dataclass(frozen=True)
class TrainSummary:
    out: Path
    dataset_id: str             # the clip dataset it trained on (lineage)
    epochs: int
    steps: int
    final_loss: float
    mined_precision: float      # last epoch's mean over steps; nan without labels or mining
    base_rate: float            # same-label share of random pairs, for comparison
    clips_per_second: float
    seconds: float

    def __str__(self) -> str:
        quality = ("" if math.isnan(self.mined_precision) else
                   f"; mined-pair precision {self.mined_precision:.2f} "
                   f"(random pairs {self.base_rate:.2f})")
        return (f"trained {self.epochs} epochs ({self.steps} steps) in {self.seconds:.0f} s, "
                f"{self.clips_per_second:.0f} clips/s; final loss {self.final_loss:.3f}"
                f"{quality}\nmodel at {self.out}")


# -- processes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _runtime(device: str) -> Runtime:
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA device is visible; use "
                            "train.device=auto or cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Runtime(rank, world, torch.device("cuda", local))
    return Runtime(rank, world, torch.device("cpu"))


def _gather(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """[B, d] per rank -> [world·B, d] in rank order, with gradients flowing back."""
    if rt.world == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x), dim=0)


def _all_finite(loss: torch.Tensor, rt: Runtime) -> bool:
    """Every rank's loss is finite (all ranks agree, so none waits in a collective)."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if rt.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _mean_across(value: float, rt: Runtime) -> float:
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.item() / rt.world


# -- schedule, bank, checkpoint, log ------------------------------------------------------

def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@contextlib.contextmanager
def batch_statistics_frozen(model: nn.Module):
    """Train-mode BatchNorm (batch statistics, as the loss sees them) without updating the
    running statistics: early in training those are far from the data, so eval mode
    would embed the bank with other normalisation than training uses."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


@torch.no_grad()
def embed_all(model: AVEncoders, data: ClipDataset, batch_size: int, rt: Runtime,
              items: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(video [n, d], audio [n, d]) embeddings of `items` (default: every clip); ranks
    split the work."""
    items = np.arange(len(data)) if items is None else items
    n, per = len(items), math.ceil(len(items) / rt.world)
    mine = items[rt.rank::rt.world]
    # every rank runs the same number of equal batches (SyncBatchNorm is collective)
    mine = np.concatenate([mine, np.repeat(items[-1:], per - len(mine))])
    video, audio = [], []
    with batch_statistics_frozen(model):
        for start in range(0, per, batch_size):
            a, v = data.batch(mine[start:start + batch_size])
            ea, ev = model(a.to(rt.device), v.to(rt.device))
            video.append(ev.float())
            audio.append(ea.float())
    video, audio = torch.cat(video), torch.cat(audio)      # [per, d]
    if rt.world > 1:   # gather every rank's share, then undo the rank interleave
        parts = []
        for x in (video, audio):
            shares = [torch.empty_like(x) for _ in range(rt.world)]
            dist.all_gather(shares, x)
            full = torch.empty(n, x.shape[1], device=x.device)
            for r in range(rt.world):
                full[r::rt.world] = shares[r][:len(range(r, n, rt.world))]
            parts.append(full)
        video, audio = parts
    return video.cpu(), audio.cpu()


class JsonLog:
    """log.jsonl, one JSON object per line; on resume, lines of re-run epochs are cut."""

    def __init__(self, path: Path, keep_before_epoch: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and keep_before_epoch is not None and path.exists():
            lines = [line for line in path.read_text().splitlines()
                     if _epoch_of(line) < keep_before_epoch]
            path.write_text("".join(line + "\n" for line in lines))
        elif enabled:
            path.write_text("")

    def write(self, **record) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def _epoch_of(line: str) -> float:
    """A log line's epoch; a line cut short by a kill counts as from the future (dropped)."""
    try:
        return json.loads(line)["epoch"]
    except (json.JSONDecodeError, KeyError):
        return math.inf


# -- training ----------------------------------------------------------------------------

def train(dataset: str | Path, out: str | Path, cfg: Config, *, resume: bool = False,
          progress: bool = False, validation: str | Path | None = None,
          dataset_uri: str | None = None) -> TrainSummary:
    """Train the encoder pair on DATASET's train split; write a model folder to OUT.

    `validation` is `sempair validate`'s output for DATASET: the model card records its
    verdict (or that validation was skipped); `dataset_uri` is where DATASET is stored.
    """
    t = cfg.train
    rt = _runtime(t.device)
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(out)
    data = ClipDataset(dataset, split="train")
    validation_record(validation, data.meta["dataset_id"])   # another dataset's: fail now
    if t.batch_size % rt.world or len(data) < t.batch_size:
        raise TrainingError(f"train.batch_size={t.batch_size} must divide by the {rt.world} "
                            f"process(es) and fit the {len(data)} training clips; lower it")
    recording = torch.as_tensor(pd.factorize(data.manifest["recording"])[0])    # [N]
    clip = torch.as_tensor(data.manifest["clip"].to_numpy(np.int64))            # [N]
    labels = data.manifest["label"].to_numpy() if "label" in data.manifest else None
    supervised = t.pairing == "supervised"     # the upper bound: labels are the positives
    if supervised and labels is None:
        raise TrainingError("train.pairing=supervised needs clip labels: ingest the "
                            "recordings with an events.csv at the source root")
    label_codes = torch.as_tensor(pd.factorize(labels)[0]) if supervised else None   # [N]

    model = AVEncoders(cfg.model).to(rt.device)
    if rt.world > 1 and rt.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trained = torch.compile(model) if t.compile else model
    if rt.world > 1:
        trained = nn.parallel.DistributedDataParallel(trained)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sampler = PartnerBatchSampler(len(data), t.batch_size, t.partners_per_anchor, t.seed)
    steps_per_epoch = len(sampler.batches(0, None))
    epochs = math.ceil(t.steps / steps_per_epoch) if t.steps else t.epochs
    total_steps = t.steps or t.epochs * steps_per_epoch      # the last epoch may be cut short
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.lr_warmup_steps, total_steps))
    temporal = temporal_partners(recording.numpy(), clip.numpy(), t.temporal_tolerance)
    same_label = label_partners(labels, per_clip=8, seed=t.seed) if supervised else None

    start_epoch, step, mined = 0, 0, None
    bank, fresh = None, np.zeros(len(data), bool)   # (video, audio) [N, d]; written since refresh
    resumed = resume and (out / CHECKPOINT).exists()
    if resumed:
        start_epoch, step, mined, bank, fresh = _load_checkpoint(
            out / CHECKPOINT, model, optimizer, scheduler, cfg, data)
    elif (out / CHECKPOINT).exists():
        raise TrainingError(f"{out} already holds a training run; pass --resume to continue "
                            "it, or choose another output folder")
    if resumed and start_epoch >= epochs and (out / "summary.json").exists():
        done = json.loads((out / "summary.json").read_text())      # nothing left to run
        return TrainSummary(**{k: math.nan if v is None else v for k, v in done.items()}
                            | {"out": out})
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    log = JsonLog(out / LOG, start_epoch if resumed else None, rt.main)
    if not resumed:
        log.write(epoch=-1, kind="config", config=cfg.to_dict(), world=rt.world,
                  device=str(rt.device), dataset=data.meta["dataset_id"], clips=len(data))

    started, seen, last_quality, epoch_losses = time.perf_counter(), 0, {}, []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if rt.device.type == "cuda" \
        else contextlib.nullcontext()
    for epoch in range(start_epoch, epochs):
        epg = t.pairing == "epg" and epoch >= t.warmup_epochs
        mining_seconds = 0.0
        if epg and t.candidates == "dataset" and (
                mined is None or (epoch - t.warmup_epochs) % t.refresh_every == 0):
            began = time.perf_counter()
            if bank is None or t.bank == "recompute":
                bank = embed_all(model, data, 2 * t.batch_size, rt)
            else:   # clips no batch has shown since the last refresh are embedded now
                stale = np.flatnonzero(~fresh)
                if len(stale):
                    bank[0][stale], bank[1][stale] = embed_all(model, data, 2 * t.batch_size,
                                                               rt, stale)
            fresh = np.zeros(len(data), bool)
            mined = mine_dataset(*bank, t.rule, t.k, t.threshold,
                                 recording.numpy() if t.cross_recording_only else None)
            mining_seconds = time.perf_counter() - began
            log.write(epoch=epoch, step=step, kind="mining", seconds=mining_seconds,
                      partners_per_clip=mined.mean_degree(),
                      max_partners=int(np.diff(mined.indptr).max()),   # hubs show here
                      **_bank_quality(mined, labels))
        # under EPG the sampler draws mined partners only: also drawing temporal ones, or
        # preferring partners not yet shown, mined worse on synthetic data (docs/training.md)
        partners = mined if (epg and t.candidates == "dataset") else same_label \
            if supervised else (temporal if t.temporal_tolerance > 0 else None)

        trained.train()
        batches = sampler.batches(epoch, partners)[:total_steps - step]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                   disable=not (progress and rt.main), leave=False)
        epoch_losses, epoch_quality, began = [], [], time.perf_counter()
        for ids in bar:
            ids = np.concatenate([ids[r::rt.world] for r in range(rt.world)])  # rank order
            local = ids.reshape(rt.world, -1)[rt.rank]
            audio, video = (x.to(rt.device, non_blocking=True) for x in data.batch(local))
            audio, video = augment(audio, video, cfg.augment,
                                   augment_rng(t.seed, step, rt.rank))
            with autocast:
                audio_emb, video_emb = trained(audio, video)               # [b, d] each
            audio_all, video_all = _gather(audio_emb, rt), _gather(video_emb, rt)  # [B, d]
            if bank is not None and t.bank == "passes":   # the bank follows training for free
                bank[0][ids], bank[1][ids] = (x.detach().float().cpu()
                                              for x in (video_all, audio_all))
                fresh[ids] = True
            positives = temporal_positives(recording[ids], clip[ids], t.temporal_tolerance)
            temporal_mask = positives.clone()
            if supervised:
                positives |= label_codes[ids][:, None] == label_codes[ids][None, :]
            elif epg and t.candidates == "dataset":
                positives |= mined.mask(ids)
            elif epg:
                exclude = positives | torch.eye(len(ids), dtype=torch.bool)
                if t.cross_recording_only:
                    exclude |= recording[ids][:, None] == recording[ids][None, :]
                positives |= mine_batch(video_all.detach().float().cpu(),
                                        audio_all.detach().float().cpu(), t.rule, t.k,
                                        t.threshold, exclude)
            offset = rt.rank * len(local)
            loss = av_loss(video_emb, audio_emb,
                           positives[offset:offset + len(local)].to(rt.device),
                           t.temperature, t.loss, video_all=video_all, audio_all=audio_all,
                           offset=offset)
            if not _all_finite(loss, rt):
                raise TrainingError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step}: lower train.lr "
                    f"(now {t.lr}) or raise train.temperature (now {t.temperature}); resume "
                    "from the last good checkpoint with --resume")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            lr = optimizer.param_groups[0]["lr"]       # the rate this step used
            optimizer.step()
            scheduler.step()

            step, seen = step + 1, seen + len(ids)
            loss_value = _mean_across(loss.item(), rt)
            epoch_losses.append(loss_value)
            record = {"loss": loss_value, "lr": lr,
                      "grad_norm": float(grad_norm),
                      "positives_per_anchor": positives.sum(1).float().mean().item(),
                      "mined_per_anchor": (positives & ~temporal_mask).sum(1).float()
                      .mean().item()}
            if labels is not None:
                record |= pair_quality(positives, temporal_mask, labels[ids])
                epoch_quality.append(record)
            log.write(epoch=epoch, step=step, kind="step", **record)
            bar.set_postfix(loss=f"{loss_value:.3f}")

        train_seconds = time.perf_counter() - began
        last_quality = _mean_quality(epoch_quality)
        log.write(epoch=epoch, step=step, kind="epoch", loss=float(np.mean(epoch_losses)),
                  mining_seconds=mining_seconds, train_seconds=train_seconds,
                  clips_per_second=len(batches) * t.batch_size / train_seconds, epg=epg,
                  **last_quality)
        if rt.main:
            if progress:
                print(f"epoch {epoch + 1}/{epochs}: loss {np.mean(epoch_losses):.4f}"
                      + (f", mined precision {last_quality['mined_precision']:.2f} vs "
                         f"{last_quality['base_rate']:.2f} random"
                         if not math.isnan(last_quality.get("mined_precision", math.nan))
                         else "") + f" ({train_seconds:.1f} s)")
            weights.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                          "step": step, "config": cfg.to_dict(),
                          "dataset_id": data.meta["dataset_id"],
                          "mined": None if mined is None else (
                              torch.from_numpy(mined.indptr), torch.from_numpy(mined.indices)),
                          "bank": bank, "fresh": torch.from_numpy(fresh)},
                         out / CHECKPOINT)
        if rt.world > 1:
            dist.barrier()

    seconds = time.perf_counter() - started
    summary = TrainSummary(out=out, dataset_id=data.meta["dataset_id"], epochs=epochs,
                           steps=step,
                           final_loss=float(np.mean(epoch_losses)) if step else math.nan,
                           mined_precision=last_quality.get("mined_precision", math.nan),
                           base_rate=last_quality.get("base_rate", math.nan),
                           clips_per_second=seen / seconds, seconds=seconds)
    if rt.main:
        _write_model(out, model, cfg, data)
        (out / "summary.json").write_text(json.dumps(json_safe(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(summary).items()}),
            indent=2, allow_nan=False) + "\n")
        _write_history(out)
        write_card(out, build_card(out, dataset, cfg.to_dict(), name=cfg.pipeline.model_name,
                                   dataset_uri=dataset_uri, validation=validation,
                                   weights=WEIGHTS))
    if rt.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _write_history(out: Path) -> None:
    """history.csv: one row per epoch from log.jsonl, for `dvc plots` and spreadsheets."""
    records = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    epochs = pd.DataFrame([r for r in records if r.get("kind") == "epoch"])
    columns = [c for c in HISTORY_COLUMNS if c in epochs.columns]
    epochs[columns].to_csv(out / "history.csv", index=False)


def _load_checkpoint(path: Path, model, optimizer, scheduler, cfg: Config,
                     data: ClipDataset):
    state = weights.load(path)
    ours = {section: cfg.to_dict()[section] for section in RESUME_SECTIONS}
    if {section: state["config"].get(section) for section in RESUME_SECTIONS} != ours:
        changed = sorted(f"{section}.{key}" for section, values in ours.items()
                         for key, value in values.items()
                         if state["config"].get(section, {}).get(key) != value)
        raise TrainingError(f"cannot resume {path}: the config differs ({', '.join(changed)});"
                            " resume with the same params and --set values")
    if state["dataset_id"] != data.meta["dataset_id"]:
        raise TrainingError(f"cannot resume {path}: it trained on dataset "
                            f"{state['dataset_id']}, not {data.meta['dataset_id']}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    mined = Partners(*(x.numpy() for x in state["mined"])) if state["mined"] is not None \
        else None
    return state["epoch"], state["step"], mined, state["bank"], state["fresh"].numpy()


def _bank_quality(mined: Partners, labels: np.ndarray | None) -> dict[str, float]:
    """Dataset-level precision of mined partners vs the same-label rate of random pairs."""
    if labels is None or not len(mined.indices):
        return {}
    src = np.repeat(np.arange(len(mined)), np.diff(mined.indptr))
    _, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum()
    return {"mined_precision": float((labels[src] == labels[mined.indices]).mean()),
            "base_rate": float((share ** 2).sum())}


def _mean_quality(records: list[dict]) -> dict[str, float]:
    """Mean of each diagnostic over an epoch's steps, ignoring steps where it was undefined."""
    if not records:
        return {}
    means = {}
    for key in ("mined_precision", "base_rate", "false_negative_rate"):
        values = np.array([r[key] for r in records], dtype=float)
        means[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return means


def _write_model(out: Path, model: AVEncoders, cfg: Config, data: ClipDataset) -> None:
    """The model folder: weights with what they need to run, full config, data lineage."""
    meta = data.meta
    weights.save({"model": model.state_dict(), "model_config": asdict(cfg.model),
                  "features": meta["features"], "clip_seconds": meta["ingest"]["clip_seconds"],
                  "sempair_version": __version__}, out / WEIGHTS)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "dataset.json").write_text(json.dumps({
        "dataset_id": meta["dataset_id"], "checksum": meta["checksum"],
        "path": str(Path(data.root).absolute()), "source": meta["source"],
        "split": "train", "clips": len(data), "counts": meta["counts"]}, indent=2) + "\n")
