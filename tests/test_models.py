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


def _scene(cfg, seed=0):
    """A static random scene [1, T, 3, H, W] uint8 with a dark square moving to the right."""
    f = cfg.features
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(60, 200, (1, 1, 3, f.height, f.width), generator=g,
                           dtype=torch.uint8).repeat(1, f.fps, 1, 1, 1)
    return frames, f


def _with_object(frames, row, col, size=8):
    out = frames.clone()
    for t in range(out.shape[1]):
        out[0, t, :, row:row + size, col + t:col + t + size] = 0
    return out


def _readout_only(model):
    """The encoders with their conv stacks taken out: what the readout alone keeps."""
    model.audio.blocks, model.video.blocks = torch.nn.Identity(), torch.nn.Identity()
    return model.eval()


@torch.no_grad()
def test_the_video_readout_keeps_where_the_object_is(cfg):
    """A global mean pool made an object 16 px away look the same (cosine 1.000); the
    grid keeps the row and column it moves in."""
    g = cfg.model.grid
    model = _readout_only(AVEncoders(cfg.model))
    scene, f = _scene(cfg)
    near, far = _with_object(scene, f.height - 12, 4), _with_object(scene, 4, 4)
    cells = [model.video.backbone(x).view(-1, g, g)[3:].sum(0) for x in (near, far)]  # [g, g]
    assert cells[0].argmax() // g == g - 1 and cells[1].argmax() // g == 0     # bottom, top
    pooled = [model.video.backbone(x).view(-1, g * g).mean(1) for x in (near, far)]
    torch.testing.assert_close(*pooled, atol=0.02, rtol=0.02)    # a mean forgets the place


def test_the_static_scene_and_its_lighting_are_taken_out(cfg):
    """Brightness and contrast are per-clip normalised; what moves shows in the motion
    channels whatever the scene, and a static clip has none."""
    from sempair.models import SNAPSHOTS, scene_channels

    scene, f = _scene(cfg)
    moving = _with_object(scene, 20, 4)
    darker = (moving.float() * 0.5 + 10).to(torch.uint8)     # night: darker, less contrast
    x, y = scene_channels(moving), scene_channels(darker)    # [1, 8, H, W]
    assert x.shape == (1, 3 + SNAPSHOTS + 1, f.height, f.width)
    # unnormalised, the darker clip's motion would be half as large (error 0.5)
    assert (x[:, 3:] - y[:, 3:]).abs().mean() < 0.15 * x[:, 3:].abs().mean()
    assert scene_channels(scene)[:, 3:].abs().max() < 1e-6          # nothing moves: no motion
    motion = x[0, -1]
    assert motion[20:28].sum() > 10 * motion[40:].sum()               # only where it moved


@torch.no_grad()
def test_the_audio_readout_keeps_which_band(cfg):
    f, bands = cfg.features, cfg.model.bands
    model = _readout_only(AVEncoders(cfg.model))
    base = torch.full((1, f.n_mels, 100), -8.0)
    low, high = base.clone(), base.clone()
    low[0, 4:8, 40:60] = 2.0                       # the same burst, in a low band
    high[0, -8:-4, 40:60] = 2.0                    # and in a high band
    empty = model.audio.backbone(base).view(-1, bands)                      # [2, bands]
    energy = [(model.audio.backbone(x).view(-1, bands) - empty).abs().sum(0)
              for x in (low, high)]                                         # [bands] each
    assert energy[0].argmax() == 0 and energy[1].argmax() == bands - 1


def test_backbone_and_projection_shapes(cfg):
    f, m = cfg.features, cfg.model
    model = AVEncoders(m).eval()
    logmel = torch.randn(3, f.n_mels, 100)
    frames = torch.randint(0, 256, (3, f.fps, 3, f.height, f.width), dtype=torch.uint8)
    audio, video = model.backbone(logmel, frames)
    assert audio.shape == (3, m.audio_widths[-1] * m.bands)
    assert video.shape == (3, m.video_widths[-1] * m.grid ** 2)
