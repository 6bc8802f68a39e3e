"""Serving: the released model as a bundle and a plain-Python predictor.

    build_bundle(RELEASE, DATASET, BUNDLE, cfg.serve)   # TorchScript encoders, probes, archive
    predictor = Predictor.load(BUNDLE, threads=1)       # checks every file's sha256
    predictor.predict_media(mp4_bytes)                  # -> JSON-ready dict per clip

The TorchServe handler and the `sempair serve` front door call these; nothing here imports
TorchServe.
"""

from sempair.serving.bundle import BUNDLE_FILE, BundleError, build_bundle
from sempair.serving.export import ExportError, check_export, export_encoders
from sempair.serving.predictor import Predictor, RequestError

__all__ = ["BUNDLE_FILE", "BundleError", "ExportError", "Predictor", "RequestError",
           "build_bundle", "check_export", "export_encoders"]
