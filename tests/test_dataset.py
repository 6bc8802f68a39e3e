import numpy as np
import pytest
import torch

from sempair.dataset import ClipDataset, DatasetError, read_manifest, read_meta


def test_items_have_the_documented_shapes_and_values(synth_dataset, cfg):
    f = cfg.features
    ds = ClipDataset(synth_dataset)
    meta = read_meta(synth_dataset)
    item = ds[len(ds) // 2]
    assert item["audio"].shape == (f.n_mels, 100) and item["audio"].dtype == torch.float32
    assert item["video"].shape == (f.fps, 3, f.height, f.width)
    assert item["video"].dtype == torch.uint8
    assert meta["shapes"] == {"audio": [f.n_mels, 100], "video": [f.fps, 3, f.height, f.width]}
    row = ds.manifest.iloc[len(ds) // 2]
    shard = np.load(synth_dataset / "shards" / f"{row['shard']}.audio.npy")
    np.testing.assert_array_equal(item["audio"].numpy(), shard[row["row"]].astype(np.float32))
    assert (item["index"], item["recording"], item["start"]) == (
        row["index"], row["recording"], row["start"])


def test_split_filter_and_dataloader_workers(synth_dataset):
    full = ClipDataset(synth_dataset)
    train = ClipDataset(synth_dataset, split="train")
    assert 0 < len(train) < len(full)
    assert set(train.manifest["split"]) == {"train"}
    loader = torch.utils.data.DataLoader(train, batch_size=16, num_workers=2)
    seen = torch.cat([batch["index"] for batch in loader])
    assert sorted(seen.tolist()) == sorted(train.manifest["index"].tolist())
    batch = next(iter(loader))
    assert batch["video"].shape[1:] == full[0]["video"].shape


def test_unknown_split_and_incomplete_folder_are_explained(synth_dataset, tmp_path):
    with pytest.raises(DatasetError, match="split 'dev' is not in"):
        read_manifest(synth_dataset, split="dev")
    (tmp_path / "shards").mkdir()
    with pytest.raises(DatasetError, match="unfinished ingest"):
        ClipDataset(tmp_path)
