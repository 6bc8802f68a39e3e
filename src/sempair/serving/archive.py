"""A serving bundle as a TorchServe model archive, and TorchServe's hardened configuration.

    archive = build_archive("runs/bundle", "runs/serve/model-store", name="sempair-av",
                            version="1")        # -> sempair-av.mar + sempair-av.card.json
    write_config("runs/serve", archive.path.parent, cfg.serve, model_name="sempair-av",
                 mar_file=archive.path.name)    # -> runs/serve/config.properties

The .mar holds the handler (sempair.serving.handler), every bundle file (flat) and a
model-config.yaml with workers and batching. Its sha256 cannot live inside it, so it sits
next to it in `<name>.card.json`: the bundle's model card plus an `archive` section.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from sempair import SempairError, json_safe
from sempair.config import ServeConfig
from sempair.serving.predictor import verify_bundle
from sempair.storage import sha256_path

BUNDLE_MANIFEST = "bundle.json"
MODEL_CONFIG = "model-config.yaml"
HANDLER = Path(__file__).with_name("handler.py")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # torch-model-archiver's rule
MIB = 1024 * 1024
MULTIPART_SLACK = 64 * 1024     # room for a multipart envelope around a max-size upload
GRPC_PORTS = {"grpc_inference": 7070, "grpc_management": 7071}   # TorchServe's defaults
RESPONSE_TIMEOUT_S = 120        # a worker silent this long on one batch is restarted
TOKEN_MINUTES = 24 * 60         # lifetime of the inference/management tokens
HIDDEN_ENV = r"AWS_.*|MINIO_.*|.*SECRET.*|.*PASSWORD.*|.*TOKEN.*|.*CREDENTIAL.*"


class ArchiveError(SempairError):
    """A bundle that cannot be archived or a configuration that cannot be written."""


@dataclass(frozen=True)
class Archive:
    path: Path      # the .mar
    sha256: str
    card: Path      # <name>.card.json next to it


def build_archive(bundle_dir: str | Path, out_dir: str | Path, *, name: str, version: str,
                  serve_cfg: ServeConfig | None = None) -> Archive:
    """Package the bundle (checked against bundle.json) and the handler into out_dir.
    The archive's model-config.yaml carries workers, batch size and delay: serve_cfg's,
    else the bundle's serving.json (TorchServe prefers it to config.properties)."""
    bundle, out = Path(bundle_dir), Path(out_dir)
    if not NAME_PATTERN.match(name):
        raise ArchiveError(f"model name {name!r} is not allowed by TorchServe; use letters, "
                           "digits, '_', '-' and '.', starting with a letter or digit")
    manifest = check_bundle(bundle)
    out.mkdir(parents=True, exist_ok=True)
    _run_archiver(bundle, out, name, str(version), model_config(bundle, serve_cfg))
    mar = out / f"{name}.mar"
    digest = sha256_path(mar)
    card = out / f"{name}.card.json"
    _write_json(card, _card(bundle, manifest, mar, digest))
    return Archive(mar, digest, card)


def check_bundle(bundle: Path) -> dict:
    """bundle.json's content, once every file it lists has the sha256 it records."""
    manifest = verify_bundle(bundle)
    extra = sorted({p.name for p in bundle.iterdir()} - set(manifest["files"])
                   - {BUNDLE_MANIFEST})
    if extra:
        raise ArchiveError(f"{bundle} holds files its {BUNDLE_MANIFEST} does not list "
                           f"({extra}); they would ship unchecked: build the bundle again")
    return manifest


def model_config(bundle: Path, serve_cfg: ServeConfig | None = None) -> dict:
    """The archive's model-config.yaml: per-model settings that travel with the .mar."""
    if serve_cfg is not None:
        workers, batch, delay = (serve_cfg.workers, serve_cfg.batch_size,
                                 serve_cfg.max_batch_delay_ms)
    else:
        serving = json.loads((bundle / "serving.json").read_text())
        workers, batch, delay = (serving["workers"], serving["batch_size"],
                                 serving["max_batch_delay_ms"])
    return {"minWorkers": workers, "maxWorkers": workers, "batchSize": batch,
            "maxBatchDelay": delay, "responseTimeout": RESPONSE_TIMEOUT_S}


def _run_archiver(bundle: Path, out: Path, name: str, version: str, settings: dict) -> None:
    """torch-model-archiver in a child process, staging in a private TMPDIR (it stages in
    $TMPDIR/<name>, which two archives of one name would otherwise share)."""
    with tempfile.TemporaryDirectory(prefix=".archiver-", dir=out) as staging:
        config = Path(staging) / MODEL_CONFIG
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        command = [sys.executable, "-m", "model_archiver.model_packaging",
                   "--model-name", name, "--version", version, "--handler", str(HANDLER),
                   "--extra-files", str(bundle.absolute()), "--config-file", str(config),
                   "--export-path", str(out), "--archive-format", "default", "--force"]
        env = os.environ | {"TMPDIR": staging}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode or not (out / f"{name}.mar").is_file():
        raise ArchiveError(f"torch-model-archiver failed (exit {done.returncode}):\n"
                           f"{(done.stderr or done.stdout)[-2000:]}\ncheck that "
                           "torch-model-archiver==0.12.0 is installed in this environment")


def _card(bundle: Path, manifest: dict, mar: Path, digest: str) -> dict:
    from importlib.metadata import version

    card = json.loads((bundle / "model_card.json").read_text())
    card["archive"] = {"file": mar.name, "sha256": digest,
                       "bundle_sha256": sha256_path(bundle / BUNDLE_MANIFEST),
                       "model": manifest["model"], "handler": "sempair.serving.handler",
                       "torchserve": version("torchserve"),
                       "torch_model_archiver": version("torch-model-archiver")}
    return card


# -- config.properties -----------------------------------------------------------------------

def resolve_ports(cfg: ServeConfig, ports: dict[str, int] | None = None) -> dict[str, int]:
    """The five listening ports: cfg's HTTP ports and TorchServe's gRPC defaults, with
    `ports` overriding any of inference, management, metrics, grpc_inference,
    grpc_management."""
    resolved = {"inference": cfg.inference_port, "management": cfg.management_port,
                "metrics": cfg.metrics_port, **GRPC_PORTS}
    unknown = set(ports or {}) - set(resolved)
    if unknown:
        raise ArchiveError(f"unknown ports {sorted(unknown)}; choose from {sorted(resolved)}")
    resolved |= ports or {}
    if len(set(resolved.values())) != len(resolved):
        raise ArchiveError(f"ports must differ from one another, got {resolved}")
    return resolved


def config_lines(folder: Path, model_store: Path, cfg: ServeConfig, *, model_name: str,
                 mar_file: str, ports: dict[str, int], version: str | None = None,
                 token_auth: bool = True) -> list[str]:
    """config.properties, one `key=value` per line, each hardened (docs/serving.md).
    `version` is the archive's (read from model_store/mar_file when not given): TorchServe
    applies `models=` only under it; unknown, the line is left out and the archive's
    model-config.yaml alone sets them. `token_auth` False only behind a NetworkPolicy (the
    cluster's pods: docs/operations.md). Values are written as Java reads .properties: a
    backslash is doubled."""
    version = version or _archive_version(Path(model_store) / mar_file)
    limit = cfg.max_request_mb * MIB + MULTIPART_SLACK
    queue = max(4 * cfg.batch_size, 8)
    heap_mb = 512 + queue * cfg.max_request_mb * 2     # queued bodies, aggregated, twice
    model = {model_name: {version: {
        "defaultVersion": True, "marName": mar_file, "minWorkers": cfg.workers,
        "maxWorkers": cfg.workers, "batchSize": cfg.batch_size,
        "maxBatchDelay": cfg.max_batch_delay_ms, "responseTimeout": RESPONSE_TIMEOUT_S,
        "startupTimeout": round(cfg.startup_timeout)}}}
    store = model_store.absolute().as_posix()
    tmp = (folder.absolute() / "tmp").as_posix()
    return [
        f"inference_address=http://{cfg.host}:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        "grpc_inference_address=127.0.0.1",
        "grpc_management_address=127.0.0.1",
        f"grpc_inference_port={ports['grpc_inference']}",
        f"grpc_management_port={ports['grpc_management']}",
        f"model_store={store}",
        f"workflow_store={store}",
        f"load_models={model_name}={mar_file}",
        "models=" + json.dumps(model, separators=(",", ":")) if version else
        "# models= left out: the archive's version is unknown here; its model-config.yaml "
        "sets workers and batching",
        f"default_workers_per_model={cfg.workers}",
        "enable_model_api=false",
        f"disable_token_authorization={str(not token_auth).lower()}",
        f"token_expiration_min={TOKEN_MINUTES}",
        "allowed_urls=" + f"file://{re.escape(store)}/.*".replace("\\", "\\\\"),
        "install_py_dep_per_model=false",
        "enable_envvars_config=false",
        f"blacklist_env_vars={HIDDEN_ENV}",
        f"max_request_size={limit}",
        f"max_response_size={limit}",
        f"job_queue_size={queue}",
        f"default_response_timeout={RESPONSE_TIMEOUT_S}",
        "decode_input_request=false",
        "enable_metrics_api=true",
        "metrics_mode=prometheus",
        "async_logging=false",
        f"vmargs=-Xmx{heap_mb}m -XX:-UsePerfData -Djava.io.tmpdir={tmp}",
    ]


def write_config(folder: str | Path, model_store: str | Path, cfg: ServeConfig, *,
                 model_name: str, mar_file: str, ports: dict[str, int] | None = None) -> Path:
    """Write folder/config.properties for serving mar_file from model_store; returns it."""
    folder, store = Path(folder), Path(model_store)
    if not (store / mar_file).is_file():
        raise ArchiveError(f"{store / mar_file} not found; build it with build_archive first")
    if cfg.max_request_mb < 1 or cfg.workers < 1 or cfg.batch_size < 1:
        raise ArchiveError("serve.max_request_mb, serve.workers and serve.batch_size must be "
                           ">= 1; fix them in params.yaml or with --set")
    lines = config_lines(folder, store, cfg, model_name=model_name, mar_file=mar_file,
                         ports=resolve_ports(cfg, ports))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.properties"
    header = "# written by sempair.serving.archive.write_config; see docs/serving.md\n"
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def mar_manifest(mar: str | Path) -> dict:
    """MAR-INF/MANIFEST.json of a .mar: the model's name, version and handler."""
    try:
        with zipfile.ZipFile(mar) as archive:
            return json.loads(archive.read("MAR-INF/MANIFEST.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ArchiveError(f"{mar} is not a model archive ({error}); build it with "
                           "build_archive") from None


def _archive_version(mar: Path) -> str | None:
    return str(mar_manifest(mar)["model"]["modelVersion"]) if mar.is_file() else None


def read_properties(path: str | Path) -> dict[str, str]:
    """config.properties as a dict, as Java reads it (`key=value`, `#` comments, a backslash
    escapes the next character)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            props[key.strip()] = re.sub(r"\\(.)", r"\1", value.strip())
    return props



def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(json_safe(content), indent=2) + "\n")


__all__ = ["Archive", "ArchiveError", "build_archive", "check_bundle", "mar_manifest",
           "read_properties", "resolve_ports", "write_config"]
