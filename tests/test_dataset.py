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


# -- damaged datasets are named before any work ------------------------------------------

def damaged_copy(synth_dataset, tmp_path):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(synth_dataset, copy)
    shard = sorted((copy / "shards").glob("*.video.npy"))[0]
    return copy, shard


def test_a_tampered_shard_fails_its_checksum_and_trains_nothing(synth_dataset, tmp_path):
    from sempair.config import load_config
    from sempair.train import train
    from tests.conftest import TRAIN_SMALL

    copy, shard = damaged_copy(synth_dataset, tmp_path)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF                                     # one pixel: same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="changed or missing since ingest") as error:
        train(copy, tmp_path / "model", load_config(None, TRAIN_SMALL))
    assert f"shards/{shard.name}" in str(error.value)
    assert not (tmp_path / "model").exists()
    assert len(ClipDataset(copy, verify=False)) == len(ClipDataset(synth_dataset))


def test_a_truncated_shard_and_a_bad_manifest_row_are_named(synth_dataset, tmp_path):
    import pandas as pd

    copy, shard = damaged_copy(synth_dataset, tmp_path)
    whole = shard.read_bytes()
    shard.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DatasetError, match="changed or missing"):
        ClipDataset(copy)
    with pytest.raises(DatasetError, match="is truncated") as error:   # even unverified
        ClipDataset(copy, verify=False)
    assert str(shard) in str(error.value)

    shard.write_bytes(whole)
    manifest = pd.read_parquet(copy / "manifest.parquet")
    manifest.loc[manifest["shard"] == shard.name.split(".")[0], "row"] += 10_000
    manifest.to_parquet(copy / "manifest.parquet", index=False)
    with pytest.raises(DatasetError, match=r"manifest\.parquet points at rows") as error:
        ClipDataset(copy, verify=False)
    assert f"shards/{shard.name.split('.')[0]}." in str(error.value)
