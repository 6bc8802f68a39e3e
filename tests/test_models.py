import torch

from sempair.models import AVEncoders


def test_encoders_map_clips_to_unit_vectors(cfg):
    f, m = cfg.features, cfg.model
    model = AVEncoders(m)
    logmel = torch.randn(4, f.n_mels, 100)
    frames = torch.randint(0, 256, (4, f.fps, 3, f.height, f.width), dtype=torch.uint8)
    audio, video = model(logmel, frames)
    assert audio.shape == video.shape == (4, m.dim)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(video.norm(dim=1), torch.ones(4))
    (audio * video).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_widths_come_from_config(cfg):
    import dataclasses
    small = AVEncoders(dataclasses.replace(cfg.model, audio_widths=(8,), video_widths=(8, 8),
                                           dim=16))
    big = AVEncoders(cfg.model)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(small) < count(big) / 10
