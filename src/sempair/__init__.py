"""sempair: audio-visual representation learning for surveillance recordings."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sempair")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"


class SempairError(Exception):
    """A failure the user can fix; its message says how. The CLI prints it, no traceback."""
