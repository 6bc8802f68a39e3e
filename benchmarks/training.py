"""Training throughput: the trainer (temporal and EPG) against a bare PyTorch loop, one run.

    python benchmarks/training.py            # writes the `## Training` section of results.md
    python benchmarks/training.py --quick    # smoke run, prints only

The peer is a plain loop with the same encoders, optimiser, batch size and symmetric
InfoNCE written with F.cross_entropy: what the trainer adds (sampler, positive masks,
diagnostics, logging, checkpoints) and what EPG adds (bank refresh, mining, partner
batches) show as ratios of clips per second measured back to back in this process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from report import write_section

from sempair.config import load_config
from sempair.dataset import ClipDataset
from sempair.models import AVEncoders

WORK = Path(__file__).with_name(".work") / "training"


def dataset(recordings: int, seconds: float) -> Path:
    """A synthetic clip dataset, made once and reused."""
    from sempair.ingest import ingest
    from sempair.synth import generate

    out = WORK / f"clips-{recordings}x{seconds:.0f}"
    if not (out / "meta.json").exists():
        cfg = load_config()
        generate(WORK / "recordings", dataclasses.replace(cfg.synth, recordings=recordings,
                                                          seconds=seconds))
        ingest(WORK / "recordings", out, cfg, workers=1, overwrite=True)
    return out


def bare_loop(data: ClipDataset, cfg, steps: int) -> float:
    """clips/s of the simplest loop: random batch -> encoders -> InfoNCE -> AdamW."""
    torch.manual_seed(0)
    model = AVEncoders(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    rng = np.random.default_rng(0)
    b = cfg.train.batch_size
    for warm in (True, False):
        began = time.perf_counter()
        for _ in range(2 if warm else steps):
            audio, video = data.batch(rng.choice(len(data), b, replace=False))
            a, v = model(audio, video)
            logits = v @ a.T / cfg.train.temperature
            target = torch.arange(b)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return steps * b / (time.perf_counter() - began)


def trainer(root: Path, overrides: list[str]) -> dict:
    """Run `sempair train`; per-epoch seconds of training and of mining from its log."""
    from sempair.train import train

    out = WORK / "model"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, overrides)
    train(root, out, cfg)
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"][1:]   # first epoch warms up
    clips = cfg.train.batch_size * (len(ClipDataset(root, "train")) // cfg.train.batch_size)
    train_s = np.array([r["train_seconds"] for r in epochs])
    mining_s = np.array([r["mining_seconds"] for r in epochs])
    return {"clips_per_s": clips / np.median(train_s), "epoch_s": np.median(train_s + mining_s),
            "mining_s": np.median(mining_s), "train_s": np.median(train_s),
            "precision": epochs[-1].get("mined_precision"), "base": epochs[-1].get("base_rate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.recordings, args.seconds, args.epochs = 4, 20.0, 2

    root = dataset(args.recordings, args.seconds)
    n_train = len(ClipDataset(root, "train"))
    common = [f"train.epochs={args.epochs}", "train.steps=0", "train.warmup_epochs=1"]
    cfg = load_config(None, common)
    bare = bare_loop(ClipDataset(root, "train"), cfg, steps=max(n_train // 64, 3))
    temporal = trainer(root, [*common, "train.pairing=temporal", "train.loss=infonce",
                              "train.temporal_tolerance=0"])
    epg = trainer(root, [*common, "train.pairing=epg", "train.candidates=dataset",
                         "train.bank=passes"])
    epg_recompute = trainer(root, [*common, "train.pairing=epg", "train.candidates=dataset",
                                   "train.bank=recompute"])
    epg_batch = trainer(root, [*common, "train.pairing=epg", "train.candidates=batch"])

    rows = [("bare PyTorch loop, InfoNCE", bare, None, None),
            ("sempair train, temporal InfoNCE", temporal["clips_per_s"], temporal["epoch_s"],
             temporal["mining_s"]),
            ("sempair train, EPG in-batch", epg_batch["clips_per_s"], epg_batch["epoch_s"],
             epg_batch["mining_s"]),
            ("sempair train, EPG dataset bank (from training passes)", epg["clips_per_s"],
             epg["epoch_s"], epg["mining_s"]),
            ("sempair train, EPG dataset bank (recomputed)", epg_recompute["clips_per_s"],
             epg_recompute["epoch_s"], epg_recompute["mining_s"])]
    table = ["| run | clips/s (training) | vs bare loop | epoch s (incl. mining) | "
             "mining s | epoch vs temporal |", "|---|---:|---:|---:|---:|---:|"]
    for name, speed, epoch, mining in rows:
        table.append(f"| {name} | {speed:.1f} | {speed / bare:.2f}× | "
                     + ("– | – | – |" if epoch is None else
                        f"{epoch:.2f} | {mining:.2f} | {epoch / temporal['epoch_s']:.2f}× |"))
    report = "\n".join([
        "## Training",
        "",
        f"`python benchmarks/training.py` — synthetic dataset of {args.recordings} × "
        f"{args.seconds:.0f} s recordings, {n_train} training clips, default model "
        f"(`model` in params.yaml), batch {cfg.train.batch_size}, {args.epochs} epochs "
        f"(medians over epochs after the first); CPU, {torch.get_num_threads()} threads, "
        f"{platform.machine()}, torch {torch.__version__}.",
        "",
        *table,
        "",
        "**EPG epoch / temporal epoch: "
        f"{epg_recompute['epoch_s'] / temporal['epoch_s']:.2f}×** when every refresh "
        "re-embeds all training clips without gradients (`train.bank=recompute`, the "
        f"default), {epg['epoch_s'] / temporal['epoch_s']:.2f}× with the bank kept current "
        "from the training passes (`train.bank=passes`; aim ≤ 1.15×). `passes` meets the "
        "aim but mined worse on synthetic data (docs/training.md), so the default pays for "
        "quality; `train.refresh_every=N` spreads the refresh cost over N epochs (not "
        "measured here). Medians leave out the first refresh, which always embeds "
        "everything.",
        "",
    ])
    print(report)
    if not args.quick:
        write_section(report)


if __name__ == "__main__":
    main()
