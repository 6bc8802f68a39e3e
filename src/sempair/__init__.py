"""sempair: audio-visual representation learning for surveillance recordings."""

import math
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sempair")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"


class SempairError(Exception):
    """A failure the user can fix; its message says how. The CLI prints it, no traceback."""


def json_safe(value):
    """NaN and inf become null and numpy scalars plain numbers: strict JSON readers (jq,
    browsers) reject the rest."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
