import numpy as np
import pytest
import torch

from sempair.features import clip_stats, log_mel, mel_center_hz, mel_filterbank


def test_log_mel_shape_for_one_second(cfg):
    f = cfg.features
    out = log_mel(np.zeros((3, f.sample_rate), np.float32), f)
    assert out.shape == (3, f.n_mels, 100)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("tone_hz", [220.0, 1000.0, 3150.0, 6000.0])
def test_pure_tone_lands_in_its_mel_band(cfg, tone_hz):
    f = cfg.features
    t = np.arange(f.sample_rate) / f.sample_rate
    spec = log_mel(np.sin(2 * np.pi * tone_hz * t).astype(np.float32), f)[0]  # [n_mels, T]
    band = int(spec.mean(dim=1).argmax())
    centers = mel_center_hz(f)
    assert abs(band - int(np.abs(centers - tone_hz).argmin())) <= 1
    # the tone's band is far above the bands an octave away
    far = int(np.abs(centers - tone_hz / 2).argmin())
    assert spec[band].mean() - spec[far].mean() > 5.0


def test_filterbank_covers_range_without_gaps(cfg):
    f = cfg.features
    fb = mel_filterbank(f.n_fft, f.n_mels, f.sample_rate, f.f_min, f.f_max)
    assert fb.shape == (f.n_fft // 2 + 1, f.n_mels)
    hz = np.linspace(0, f.sample_rate / 2, f.n_fft // 2 + 1)
    centers = mel_center_hz(f)
    between = (hz >= centers[0]) & (hz <= centers[-1])
    # neighbouring triangles add up to one between the first and last band centres
    np.testing.assert_allclose(fb.numpy()[between].sum(axis=1), 1.0, atol=1e-4)
    assert fb.numpy()[(hz < f.f_min) | (hz > f.f_max)].sum() == 0
    # no empty band (the lowest ones are about one FFT bin wide at n_fft=512)
    assert (fb.numpy().max(axis=0) > 0.45).all()


def test_silence_and_loud_noise_are_ordered(cfg):
    f = cfg.features
    rng = np.random.default_rng(0)
    audio = np.stack([np.zeros(f.sample_rate), rng.normal(0, 0.3, f.sample_rate)]).astype(
        np.float32)
    spec = log_mel(audio, f).numpy()
    frames = np.zeros((2, 8, 3, 16, 16), np.uint8)
    frames[1, ::2] = 255                                  # flicker: bright and motion
    stats = clip_stats(audio, spec, frames)
    assert stats["audio_rms_dbfs"][0] == pytest.approx(-120, abs=1e-3)
    assert stats["audio_rms_dbfs"][1] == pytest.approx(20 * np.log10(0.3), abs=0.3)
    assert stats["video_brightness"][0] == 0 and stats["video_brightness"][1] == 0.5
    assert stats["video_motion"][0] == 0 and stats["video_motion"][1] == 1.0


def test_log_mel_of_any_finite_audio_is_finite_in_float16(cfg):
    """Huge samples (a crafted float file) must not overflow the power into inf or NaN."""
    f, n = cfg.features, cfg.features.sample_rate
    top = np.finfo(np.float32).max
    audio = np.stack([np.full(n, top), np.tile([top, -top], n // 2),
                      np.random.default_rng(0).uniform(-top, top, n)]).astype(np.float32)
    spec = log_mel(audio, f).numpy()
    assert np.isfinite(spec).all() and np.isfinite(spec.astype(np.float16)).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_log_mel_refuses_non_finite_audio_instead_of_making_nan_features(cfg, value):
    audio = np.zeros((2, cfg.features.sample_rate), np.float32)
    audio[1, 100] = value
    with pytest.raises(ValueError, match="waveform has 1 NaN or infinite samples, which "
                       "would make NaN features; repair the audio first"):
        log_mel(audio, cfg.features)
