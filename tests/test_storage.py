"""Storage against a real S3-protocol server (moto): verified transfers, retries, clear errors."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sempair.storage import (
    MIB,
    LocalSource,
    NotFoundError,
    S3Settings,
    S3Source,
    S3Store,
    S3Uri,
    StorageError,
    Transfer,
    download_dir,
    fetch,
    find,
    is_remote,
    open_source,
    parse_s3_uri,
    publish,
    read_text,
    upload_dir,
    write_text,
)
from tests.conftest import ROOT
from tests.s3_server import DENIED, DROP, FaultProxy, free_port, run_moto

FAST = Transfer(retries=3, backoff=0.01)   # retries without the waiting


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_folder(root: Path, marker: bool = True) -> dict[str, bytes]:
    files = {"a.bin": os.urandom(1000), "sub/b.txt": b"bee\n", "sub/deep/c.npy": b"\x93NUMPY"}
    if marker:
        files["meta.json"] = b'{"dataset_id": "x"}\n'
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- settings and URIs -----------------------------------------------------------------

def test_settings_come_from_the_environment():
    env = {"AWS_ENDPOINT_URL": "https://s3.example.org/", "AWS_ACCESS_KEY_ID": "id",
           "AWS_SECRET_ACCESS_KEY": "secret"}
    settings = S3Settings.from_env(env)
    assert (settings.secure, settings.host, settings.region) == (True, "s3.example.org",
                                                                 "us-east-1")
    assert "secret" not in repr(settings)
    with pytest.raises(StorageError, match="set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"):
        S3Settings.from_env({"AWS_ENDPOINT_URL": "http://x:9000"})
    with pytest.raises(StorageError, match="not an endpoint"):
        S3Settings.from_env({**env, "AWS_ENDPOINT_URL": "minio:9000"})
    with pytest.raises(ValueError, match="5 MiB"):
        Transfer(part_size=MIB)
    backoff = Transfer(backoff=1.0, backoff_max=4.0)   # doubling, jittered, capped
    assert 0.5 <= backoff.delay(0) <= 1 and 1 <= backoff.delay(1) <= 2
    assert 2 <= backoff.delay(9) <= 4


def test_uris():
    assert is_remote("s3://b/p") and not is_remote("/data/s3") and not is_remote(Path("x"))
    assert parse_s3_uri("s3://bucket/a//b/") == S3Uri("bucket", "a/b")
    assert str(parse_s3_uri("s3://bucket")) == "s3://bucket"
    assert parse_s3_uri("s3://bucket/p").key("x/y.mp4") == "p/x/y.mp4"
    with pytest.raises(ValueError, match="not a path inside"):
        parse_s3_uri("s3://bucket/p").key("../q")
    with pytest.raises(StorageError, match="names no bucket"):
        parse_s3_uri("s3:///p")


# -- verified transfers ----------------------------------------------------------------

def test_folder_round_trip_is_verified(s3_env, s3_server, tmp_path):
    files = make_folder(tmp_path / "data")
    uri = f"s3://{s3_env}/datasets/synth"
    publish(tmp_path / "data", uri)
    client = s3_server.client()
    for rel, data in files.items():   # the checksum travels as object metadata
        head = client.head_object(Bucket=s3_env, Key=f"datasets/synth/{rel}")
        assert head["Metadata"]["sha256"] == sha256(data)

    local = fetch(uri, tmp_path / "cache")
    assert local == tmp_path / "cache" / s3_env / "datasets" / "synth"
    assert tree(local) == files
    stamp = (local / "a.bin").stat().st_mtime_ns
    assert fetch(uri, tmp_path / "cache") == local   # unchanged: reused, not downloaded
    assert (local / "a.bin").stat().st_mtime_ns == stamp

    (tmp_path / "data" / "sub" / "b.txt").unlink()    # publishing again mirrors the folder
    (tmp_path / "data" / "new.txt").write_text("new\n")
    publish(tmp_path / "data", uri)
    assert tree(fetch(uri, tmp_path / "cache")) == tree(tmp_path / "data")
    assert not list(tmp_path.glob("cache/**/.*partial*"))


def test_fetch_lists_the_remote_folder_once(s3_env, tmp_path, monkeypatch):
    make_folder(tmp_path / "data")
    uri = f"s3://{s3_env}/datasets/once"
    publish(tmp_path / "data", uri)
    listed = []
    real_list = S3Store.list
    monkeypatch.setattr(S3Store, "list",
                        lambda self, prefix="": listed.append(prefix) or real_list(self, prefix))
    assert tree(fetch(uri, tmp_path / "cache")) == tree(tmp_path / "data")
    assert listed == ["datasets/once/"]   # downloaded from the listing that passed the check


@pytest.mark.parametrize("escape", ["/{outside}/evil.txt", "../evil.txt", "sub/../../evil.txt",
                                    "./evil.txt", "sub//evil.txt"])
def test_a_key_that_leaves_the_destination_refuses_the_fetch(s3_env, s3_server, tmp_path,
                                                              escape):
    """Object keys are chosen by whoever can write to the bucket: `ds/` + an absolute path
    was once written to that absolute path. Now no byte is written anywhere."""
    make_folder(tmp_path / "data")
    uri = f"s3://{s3_env}/ds"
    publish(tmp_path / "data", uri)
    outside = tmp_path / "outside"
    outside.mkdir()
    key = "ds/" + escape.format(outside=str(outside).lstrip("/"))
    s3_server.client().put_object(Bucket=s3_env, Key=key, Body=b"pwned",
                                  Metadata={"sha256": sha256(b"pwned")})
    assert key in {o.key for o in S3Store(s3_env).list("ds/")}   # stored verbatim

    with pytest.raises(StorageError, match="would not land inside the destination") as error:
        fetch(uri, tmp_path / "cache")
    assert repr(key) in str(error.value)
    with pytest.raises(StorageError, match="refusing to fetch"):
        download_dir(uri, tmp_path / "copy")
    assert not list(outside.rglob("*")) and not (tmp_path / "evil.txt").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (tmp_path / "copy").exists() and not (tmp_path / "cache" / s3_env / "ds").exists()


def test_an_object_without_a_checksum_is_refused_unless_allowed(s3_env, s3_server, tmp_path,
                                                                monkeypatch):
    make_folder(tmp_path / "data")
    uri = f"s3://{s3_env}/models/m"
    publish(tmp_path / "data", uri)
    s3_server.client().put_object(Bucket=s3_env, Key="models/m/model.pt", Body=b"weights")
    with pytest.raises(StorageError, match=r"no sha256 metadata.*SEMPAIR_ALLOW_UNVERIFIED=1"):
        fetch(uri, tmp_path / "cache")
    assert not (tmp_path / "cache" / s3_env / "models" / "m").exists()

    monkeypatch.setenv("SEMPAIR_ALLOW_UNVERIFIED", "1")      # the user's explicit opt-in
    assert (fetch(uri, tmp_path / "cache") / "model.pt").read_bytes() == b"weights"
    monkeypatch.setenv("SEMPAIR_ALLOW_UNVERIFIED", "maybe")
    with pytest.raises(StorageError, match="set it to 1 or 0"):
        S3Settings.from_env()


def test_recordings_from_other_tools_need_no_checksum(s3_env, s3_server):
    """Cameras and `mc cp` record no sha256: media is decoded as untrusted input anyway, and
    ingest hashes each file it reads into recordings.parquet."""
    s3_server.client().put_object(Bucket=s3_env, Key="raw/cam.mp4", Body=b"media")
    with open_source(f"s3://{s3_env}/raw").local_copy("cam.mp4") as path:
        assert path.read_bytes() == b"media"


def test_local_publish_and_fetch(tmp_path):
    files = make_folder(tmp_path / "data")
    out = publish(tmp_path / "data", tmp_path / "models" / "m1")
    assert tree(Path(out)) == files
    assert fetch(out, tmp_path / "cache") == Path(out)
    with pytest.raises(StorageError, match=r"no meta\.json"):
        publish(tmp_path / "data" / "sub", tmp_path / "models" / "m2")


def test_multipart_upload(s3_env, s3_server, tmp_path):
    data = os.urandom(11 * MIB)
    (tmp_path / "big.bin").write_bytes(data)
    store = S3Store(s3_env, transfer=Transfer(part_size=5 * MIB))
    assert store.upload(tmp_path / "big.bin", "big.bin") == sha256(data)
    etag = s3_server.client().head_object(Bucket=s3_env, Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")            # three parts: 5 + 5 + 1 MiB
    assert store.download("big.bin", tmp_path / "back.bin") == sha256(data)
    assert (tmp_path / "back.bin").read_bytes() == data


def test_an_incomplete_folder_is_refused(s3_env, tmp_path):
    make_folder(tmp_path / "data", marker=False)
    with pytest.raises(StorageError, match=r"has no meta\.json"):
        upload_dir(tmp_path / "data", f"s3://{s3_env}/half")
    upload_dir(tmp_path / "data", f"s3://{s3_env}/half", marker=None)   # as if interrupted
    with pytest.raises(StorageError, match=r"s3://.*/half is incomplete: no meta.json; an "
                                           r"upload is still running or failed — re-run it"):
        download_dir(f"s3://{s3_env}/half", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_object_fails_its_checksum(s3_env, s3_server, tmp_path):
    (tmp_path / "clip.bin").write_bytes(b"good bytes")
    store = S3Store(s3_env)
    digest = store.upload(tmp_path / "clip.bin", "clip.bin")
    s3_server.client().put_object(Bucket=s3_env, Key="clip.bin", Body=b"evil bytes",
                                  Metadata={"sha256": digest})   # behind our back
    with pytest.raises(StorageError, match=r"failed its checksum.*upload it again"):
        store.download("clip.bin", tmp_path / "out" / "clip.bin")
    assert list((tmp_path / "out").iterdir()) == []   # neither the file nor a partial
    with pytest.raises(StorageError, match="failed its checksum"):
        store.read_bytes("clip.bin")


# -- retries ---------------------------------------------------------------------------

def test_transient_failures_are_retried_permanent_ones_not(s3_env, s3_server, tmp_path):
    (tmp_path / "f.bin").write_bytes(b"payload")
    with FaultProxy(s3_server.endpoint) as proxy:
        settings = S3Settings(proxy.endpoint, "testing", "testing")
        store = S3Store(s3_env, settings, FAST)
        proxy.fail(2)                                   # 503 SlowDown, twice
        store.upload(tmp_path / "f.bin", "f.bin")
        assert proxy.faults == 2 and store.stat("f.bin").sha256 == sha256(b"payload")

        proxy.fail(2, DROP)                             # the connection closes, twice
        assert store.read_bytes("f.bin") == b"payload"
        assert proxy.faults == 4

        before = proxy.requests
        proxy.fail(5, DENIED)                           # final: one request, no retry
        with pytest.raises(StorageError, match="access denied"):
            store.upload(tmp_path / "f.bin", "g.bin")
        assert proxy.requests == before + 1

        proxy.fail(9)                                   # more failures than retries
        with pytest.raises(StorageError, match=r"SlowDown.*\(4 attempts\)"):
            store.upload(tmp_path / "f.bin", "h.bin")


# -- clear errors ----------------------------------------------------------------------

def test_bad_credentials_are_named(tmp_path):
    with run_moto(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:
        store = S3Store("bucket", S3Settings(server.endpoint, "wrong", "wrong"), FAST)
        with pytest.raises(StorageError, match=r"rejected the credentials \(InvalidAccessKeyId"
                                               r"\); check AWS_ACCESS_KEY_ID / AWS_SECRET"):
            store.list()


def test_an_unreachable_endpoint_is_named_quickly():
    endpoint = f"http://127.0.0.1:{free_port()}"      # nothing listens there
    store = S3Store("bucket", S3Settings(endpoint, "id", "secret"),
                    Transfer(retries=1, backoff=0.01))
    started = time.perf_counter()
    with pytest.raises(StorageError, match=f"cannot reach the object store at {endpoint}: "
                                           "connection refused.*check AWS_ENDPOINT_URL"):
        store.list()
    assert time.perf_counter() - started < 2


def test_a_missing_bucket_is_named(s3_env, tmp_path):
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist on http://"
                                           r".*create it"):
        fetch("s3://no-such-bucket/datasets/x", tmp_path)


def test_missing_settings_are_named(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(StorageError, match="set AWS_ENDPOINT_URL"):
        open_source("s3://bucket/raw")


# -- sources ---------------------------------------------------------------------------

def test_s3_source_lists_and_copies(s3_env, tmp_path):
    store = S3Store(s3_env)
    for key, data in {"raw/cam1/a.mp4": b"aaaa", "raw/b.wav": b"bb", "raw/.hidden": b"h",
                      "raw/.trash/c.mp4": b"c", "raw/events.csv": b"e", "rawer/x.mp4": b"x"
                      }.items():
        store.write_bytes(key, data)
    source = open_source(f"s3://{s3_env}/raw/")
    assert isinstance(source, S3Source) and source.uri == f"s3://{s3_env}/raw"
    assert [(f.id, f.size) for f in source.list()] == [
        ("b.wav", 2), ("cam1/a.mp4", 4), ("events.csv", 1)]
    assert source.exists("events.csv") and not source.exists("nope.csv")

    cache = Path(os.environ["XDG_CACHE_HOME"])
    with source.local_copy("cam1/a.mp4") as path:
        assert path.read_bytes() == b"aaaa" and path.name == "a.mp4"
        assert path.is_relative_to(cache)
    assert not path.exists() and not any(p.is_file() for p in cache.rglob("*"))

    with source.open("b.wav") as handle:        # path() keeps one verified copy
        assert handle.read() == b"bb"
    assert source.path("b.wav").read_bytes() == b"bb"
    with pytest.raises(NotFoundError):
        source.path("nope.mp4")


def test_local_source_has_the_same_interface(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"a")
    source = open_source(tmp_path)
    assert isinstance(source, LocalSource) and source.exists("a.mp4")
    assert not source.exists("b.mp4")
    with source.local_copy("a.mp4") as path:
        assert path == tmp_path / "a.mp4"
    assert path.exists()                        # the original, never deleted
    with pytest.raises(ValueError, match="use a local path or s3://"):
        open_source("gs://bucket/raw")


def test_open_source_in_a_fresh_process(s3_env):
    S3Store(s3_env).write_bytes("raw/x/clip.mp4", b"clip bytes")
    code = ("import sys; from sempair.storage import open_source; "
            "s = open_source(sys.argv[1]); [f] = s.list(); "
            "print(f.id, s.path(f.id).read_bytes().decode())")
    out = subprocess.run([sys.executable, "-c", code, f"s3://{s3_env}/raw"], check=True,
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "x/clip.mp4 clip bytes"


# -- single files ----------------------------------------------------------------------

@pytest.mark.parametrize("remote", [False, True])
def test_read_write_find(remote, request, tmp_path):
    root = f"s3://{request.getfixturevalue('s3_env')}/models" if remote else str(tmp_path)
    for name in ("m1/model_card.json", "m2/v1/model_card.json", "m2/other.json"):
        write_text(f"{root}/{name}", f'{{"name": "{name}"}}')
    assert read_text(f"{root}/m1/model_card.json") == '{"name": "m1/model_card.json"}'
    assert find(root, "model_card.json") == [f"{root}/m1/model_card.json",
                                             f"{root}/m2/v1/model_card.json"]
    assert find(f"{root}/nothing-here", "model_card.json") == []
    with pytest.raises(FileNotFoundError):
        read_text(f"{root}/m3/model_card.json")
