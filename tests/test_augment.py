"""Training-batch augmentation: reproducible from (seed, step), shapes and dtypes kept,
and each transform does what it says, measured on constructed inputs."""

import dataclasses
import math

import pytest
import torch

from sempair.augment import augment, generator

OFF = dict(shift_pixels=0, flip=0.0, gain_db=0.0, audio_shift=0, freq_mask=0, time_mask=0)


@pytest.fixture
def batch(cfg):
    f = cfg.features
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(6, f.n_mels, 100, generator=g)
    video = torch.randint(0, 256, (6, f.fps, 3, f.height, f.width), generator=g,
                          dtype=torch.uint8)
    return audio, video


def only(cfg, **changes):
    return dataclasses.replace(cfg.augment, **(OFF | changes))


def test_the_same_seed_and_step_give_the_same_batch(cfg, batch):
    audio, video = batch
    first = augment(audio, video, cfg.augment, generator(0, 5))
    again = augment(audio, video, cfg.augment, generator(0, 5))
    other = augment(audio, video, cfg.augment, generator(0, 6))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])
    assert first[0].shape == audio.shape and first[1].dtype == torch.uint8
    assert first[1].shape == video.shape


def test_disabled_changes_nothing_and_inputs_are_never_changed(cfg, batch):
    audio, video = batch
    kept = audio.clone(), video.clone()
    off = dataclasses.replace(cfg.augment, enabled=False)
    assert augment(audio, video, off, generator(0, 0)) == (audio, video)
    augment(audio, video, cfg.augment, generator(0, 0))
    assert torch.equal(audio, kept[0]) and torch.equal(video, kept[1])


def test_a_shift_moves_the_picture_and_a_flip_mirrors_it(cfg, batch):
    _, video = batch
    dot = torch.zeros_like(video)
    dot[:, :, :, 20, 30] = 255                                  # one bright pixel
    shifted = augment(torch.zeros(6, 64, 100), dot, only(cfg, shift_pixels=4),
                      generator(1, 0))[1]
    for clip in shifted:
        rows, cols = torch.nonzero(clip[0, 0], as_tuple=True)
        assert len(rows) == 1 and abs(rows[0] - 20) <= 4 and abs(cols[0] - 30) <= 4
    assert len({tuple(torch.nonzero(c[0, 0])[0].tolist()) for c in shifted}) > 1
    flipped = augment(torch.zeros(6, 64, 100), dot, only(cfg, flip=1.0), generator(1, 0))[1]
    assert torch.equal(flipped, dot.flip(-1))


def test_gain_adds_one_level_per_clip_within_its_bound(cfg, batch):
    audio, video = batch
    out = augment(audio, video, only(cfg, gain_db=6.0), generator(2, 0))[0]
    change = (out - audio).flatten(1)                           # [B, n_mels * T]
    assert torch.allclose(change, change[:, :1].expand_as(change), atol=1e-5)
    assert change.abs().max() <= 6.0 * math.log(10) / 10 + 1e-5
    assert change[:, 0].std() > 0


def test_spec_augment_masks_one_stretch_with_the_clips_level(cfg, batch):
    audio, video = batch
    out = augment(audio, video, only(cfg, freq_mask=8, time_mask=20), generator(3, 0))[0]
    for clip, masked in zip(audio, out, strict=True):
        changed = clip != masked                                # [n_mels, T]
        bands, frames = changed.all(1).sum(), changed.all(0).sum()
        assert bands <= 8 and frames <= 20
        assert torch.allclose(masked[changed], clip.mean().expand(int(changed.sum())))
