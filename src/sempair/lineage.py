"""Lineage and audit: the model card every model carries, and which data trained what.

`MODEL/model_card.json` answers an auditor's question months later: which data trained
this model (dataset id and checksum, its DVC version, the source and a digest of the
recordings' checksums), did that data pass validation, with which config and code, and
how well the model did. `sempair audit` prints one card, or every model in a store.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from sempair import SempairError, __version__, json_safe
from sempair.storage import find, read_text, sha256_path

CARD = "model_card.json"
CARD_VERSION = 1
GIT_REV_ENV = "SEMPAIR_GIT_REV"   # images carry no .git: the build sets the revision here
SKIPPED, PASSED, FAILED = "skipped", "passed", "failed"


class LineageError(SempairError):
    """Lineage that does not add up (a validation of another dataset, a missing card)."""


# -- the store's layout (docs/lineage.md) -----------------------------------------------------

def dataset_uri(store: str, dataset_id: str) -> str:
    return f"{store.rstrip('/')}/datasets/{dataset_id}"


def validation_uri(store: str, dataset_id: str) -> str:
    return f"{store.rstrip('/')}/validation/{dataset_id}"


def model_uri(store: str, name: str, version: str, part: str = "") -> str:
    """STORE/models/<name>/<version>[/part]: part is "release" or "serving" (the archive)."""
    return f"{store.rstrip('/')}/models/{name}/{version}" + (f"/{part}" if part else "")


# -- the pieces of a card ----------------------------------------------------------------------

def recordings_digest(dataset: str | Path) -> str:
    """One checksum over every ingested recording's (id, sha256): same recordings, same digest,
    whatever the clip parameters."""
    table = pd.read_parquet(Path(dataset) / "recordings.parquet",
                            columns=["recording", "sha256", "status"])
    lines = sorted(f"{r.recording} {r.sha256}\n" for r in table.itertuples()
                   if r.status != "quarantined")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def git_revision(path: str | Path) -> dict | None:
    """{"rev", "dirty"} of the git checkout holding `path`; $SEMPAIR_GIT_REV in images."""
    if os.environ.get(GIT_REV_ENV):
        return {"rev": os.environ[GIT_REV_ENV], "dirty": False}
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        rev = _git(folder, "rev-parse", "HEAD")
        dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"rev": rev, "dirty": dirty}


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()


def dvc_version(dataset: str | Path) -> dict | None:
    """The dvc.lock entry that tracks `dataset`, when it lives in a DVC project.

    `md5` is DVC's hash of the folder; with the git revision of dvc.lock, `git checkout REV
    && dvc checkout` (or `dvc pull`) restores exactly this data.
    """
    dataset = Path(dataset).absolute()
    root = next((p for p in dataset.parents if (p / ".dvc").is_dir()), None)
    if root is None or not (root / "dvc.lock").is_file():
        return None
    relative = dataset.relative_to(root).as_posix()
    stages = yaml.safe_load((root / "dvc.lock").read_text()).get("stages", {})
    for stage, entry in stages.items():
        for out in entry.get("outs", []):
            if out["path"].rstrip("/") == relative:
                return {"stage": stage, "path": relative, "md5": out.get("md5"),
                        "files": out.get("nfiles"), "git": git_revision(root / "dvc.lock")}
    return None


def validation_record(validation: str | Path | None, dataset_id: str) -> dict:
    """What the card says about validation: passed, failed (and what) or skipped."""
    if validation is None:
        return {"status": SKIPPED}
    path = Path(validation)
    path = path / "validation.json" if path.is_dir() else path
    if not path.is_file():
        raise LineageError(f"no validation result at {path}; run `sempair validate DATASET "
                           "OUT` and pass OUT")
    result = json.loads(path.read_text())
    if result["dataset_id"] != dataset_id:
        raise LineageError(f"{path} validated dataset {result['dataset_id']}, not "
                           f"{dataset_id}; validate the dataset you train on")
    failed = [c for c in result["checks"] if not c["success"]]
    critical = [f"{c['suite']}: {c['name']}" for c in failed if c["severity"] == "critical"]
    return {"status": FAILED if critical else PASSED, "critical_failures": critical,
            "warnings": [f"{c['suite']}: {c['name']}" for c in failed
                         if c["severity"] != "critical"],
            "checks": len(result["checks"]), "reference": result.get("reference_id"),
            "great_expectations": result.get("gx_version")}


def model_version(created: time.struct_time, weights_sha256: str) -> str:
    """A sortable, unique version: UTC time and the weights' checksum, 20261125T2330Z-1a2b3c4d."""
    return time.strftime("%Y%m%dT%H%MZ", created) + "-" + weights_sha256[:8]


# -- the card ----------------------------------------------------------------------------------

def build_card(model_dir: str | Path, dataset: str | Path, config: dict, *, name: str,
               dataset_uri: str | None = None, validation: str | Path | None = None,
               weights: str = "model.pt") -> dict:
    """The model card of a freshly trained model folder (training metrics from summary.json)."""
    model_dir, dataset = Path(model_dir), Path(dataset)
    meta = json.loads((dataset / "meta.json").read_text())
    weights_sha256, created = sha256_path(model_dir / weights), time.gmtime()
    summary = model_dir / "summary.json"
    return {
        "card_version": CARD_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", created),
        "model": {"name": name, "version": model_version(created, weights_sha256),
                  "weights": weights, "sha256": weights_sha256},
        "data": {"dataset_id": meta["dataset_id"], "checksum": meta["checksum"],
                 "uri": dataset_uri or str(dataset.absolute()), "source": meta["source"],
                 "source_version": meta.get("source_version"),
                 "recordings_digest": recordings_digest(dataset),
                 "recordings": meta["counts"]["ok"] + meta["counts"]["partial"],
                 "clips": meta["counts"]["clips"], "dvc": dvc_version(dataset)},
        "validation": validation_record(validation, meta["dataset_id"]),
        "config": config,
        "code": {"sempair": __version__, "git": git_revision(Path(__file__))},
        "metrics": {"train": json.loads(summary.read_text()) if summary.is_file() else {}},
    }


def write_card(model_dir: str | Path, card: dict) -> Path:
    path = Path(model_dir) / CARD
    path.write_text(json.dumps(json_safe(card), indent=2, allow_nan=False) + "\n")
    return path


def read_card(uri: str | Path) -> dict:
    """A model card from a model folder, a card file, or their s3:// equivalents."""
    text = str(uri).rstrip("/")
    try:
        return json.loads(read_text(text if text.endswith(".json") else f"{text}/{CARD}"))
    except FileNotFoundError as missing:
        raise LineageError(f"no {CARD} at {uri}: models trained before lineage existed have "
                           "none; retrain, or point at a model folder") from missing


def with_evaluation(card: dict, evaluation: dict, metrics: dict) -> dict:
    """The card of a released model: the training card plus its evaluation and gate."""
    return {**card, "metrics": {**card["metrics"], "evaluation": metrics},
            "evaluation": {"dataset_id": evaluation["dataset"], "gate": evaluation["gate"]}}


# -- audit -------------------------------------------------------------------------------------

def card_rows(card: dict) -> list[tuple[str, str]]:
    """A card as (field, value) rows, the questions an auditor asks first."""
    data, validation, code = card["data"], card["validation"], card["code"]
    dvc, git = data.get("dvc"), code.get("git")
    evaluation = card.get("metrics", {}).get("evaluation", {})
    gate = card.get("evaluation", {}).get("gate")
    rows = [
        ("model", f"{card['model']['name']} {card['model']['version']}"),
        ("weights sha256", card["model"]["sha256"]),
        ("trained", card["created"]),
        ("dataset", f"{data['dataset_id']} ({data['checksum']})"),
        ("dataset uri", data["uri"]),
        ("dvc version", f"{dvc['path']} md5 {dvc['md5']} in dvc.lock at git "
                        f"{_rev(dvc['git'])}" if dvc else "not in a DVC project"),
        ("source", data["source"]),
        ("recordings", f"{data['recordings']} ({data['recordings_digest']})"),
        ("clips", str(data["clips"])),
        ("validation", _validation_text(validation)),
        ("pairing", f"{card['config']['train']['pairing']} "
                    f"(loss {card['config']['train']['loss']})"),
        ("code", f"sempair {code['sempair']} at git {_rev(git)}"),
        ("final loss", _number(card["metrics"]["train"].get("final_loss"))),
    ]
    if evaluation:
        rows += [(name, _number(evaluation.get(name))) for name in
                 ("localization_macro_f1", "search_v2v_map", "anomaly_combined_auc")
                 if name in evaluation]
    if gate:
        rows.append(("gate", "passed" if gate["passed"] else "failed"))
    return rows


def _rev(git: dict | None) -> str:
    if not git:
        return "unknown"
    return git["rev"][:12] + (" (uncommitted changes)" if git["dirty"] else "")


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _validation_text(validation: dict) -> str:
    status = validation["status"]
    if status == FAILED:
        return f"FAILED: {'; '.join(validation['critical_failures'])}"
    if status == PASSED:
        warned = len(validation.get("warnings", []))
        return f"passed ({validation['checks']} checks, {warned} warnings)"
    return "SKIPPED: trained without `sempair validate`"


def format_rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(field) for field, _ in rows)
    return "\n".join(f"{field:<{width}}  {value}" for field, value in rows)


@dataclass(frozen=True)
class AuditEntry:
    uri: str            # the model folder
    model: str          # name version
    trained: str
    dataset_id: str
    dvc_md5: str
    validation: str     # passed | failed | skipped
    released: bool

    @property
    def flagged(self) -> bool:
        return self.validation != PASSED


def audit_store(prefix: str) -> list[AuditEntry]:
    """Every model under a models prefix (local folder or s3://), oldest first.

    A released model has two cards, the trained model's and its release's (which adds the
    evaluation): they are one entry, released.
    """
    cards: dict[tuple[str, str], tuple[str, dict]] = {}
    for card_uri in find(prefix, CARD):
        card = read_card(card_uri)
        key = (card["model"]["name"], card["model"]["version"])
        if key not in cards or "evaluation" in card:
            folder = cards[key][0] if key in cards else card_uri.rsplit("/", 1)[0]
            cards[key] = (folder, card)
    entries = []
    for folder, card in cards.values():
        dvc = card["data"].get("dvc") or {}
        entries.append(AuditEntry(
            uri=folder, model=f"{card['model']['name']} {card['model']['version']}",
            trained=card["created"], dataset_id=card["data"]["dataset_id"],
            dvc_md5=dvc.get("md5") or "-", validation=card["validation"]["status"],
            released=bool(card.get("evaluation", {}).get("gate", {}).get("passed"))))
    return sorted(entries, key=lambda e: (e.trained, e.uri))


def format_audit(entries: list[AuditEntry]) -> str:
    if not entries:
        return "no models found (no model_card.json under this prefix)"
    header = ("model", "trained", "dataset", "dvc md5", "validation", "released", "uri")
    rows = [header] + [(e.model, e.trained, e.dataset_id, e.dvc_md5[:12],
                        e.validation.upper() if e.flagged else e.validation,
                        "yes" if e.released else "no", e.uri) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    flagged = [e for e in entries if e.flagged]
    if flagged:
        lines.append(f"\n{len(flagged)} of {len(entries)} models were trained on data that "
                     "failed or skipped validation (marked in capitals)")
    return "\n".join(lines)
