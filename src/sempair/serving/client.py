"""A client for the served model: one media file in, its prediction (or a clear error) out.

    token = read_token("runs/serve")
    result = predict_file("cam01.mp4", "http://127.0.0.1:8080", token, "sempair-av")
    print(format_prediction(result))

Standard library only (urllib): usable wherever sempair is installed, server or not.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from sempair import SempairError

KEY_FILE = "key_file.json"      # TorchServe 0.12 writes it in its working folder
CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".mov": "video/quicktime", ".avi": "video/x-msvideo",
    ".ts": "video/mp2t", ".mts": "video/mp2t", ".flv": "video/x-flv", ".wav": "audio/wav",
    ".mp3": "audio/mpeg", ".flac": "audio/flac", ".m4a": "audio/mp4", ".ogg": "audio/ogg",
    ".opus": "audio/opus"}
TOKEN_HELP = ("pass the inference token: read_token(WORKDIR) or `key_file.json` in the "
              "server's working folder (tokens expire; restart the server, or POST "
              "/token?type=inference to the management API with the API key, for a new one)")


class ServingError(SempairError):
    """The server answered with an error, or could not be reached; `status` is the HTTP
    status (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def content_type(path: str | Path) -> str:
    """The Content-Type for a media file, from its suffix (application/octet-stream if
    unknown)."""
    return CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def predict_file(path: str | Path, url: str, token: str, model: str, *,
                 top_k: int | None = None, embeddings: bool = False,
                 timeout: float = 60) -> dict:
    """POST one media file to url/predictions/model; returns the prediction dict."""
    path = Path(path)
    if not path.is_file():
        raise ServingError(f"{path} not found; pass a media file (mp4, mkv, wav, ...)")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type(path)}
    if top_k is not None:
        headers["X-Sempair-Top-K"] = str(top_k)
    if embeddings:
        headers["X-Sempair-Embeddings"] = "true"
    return request_json(f"{url.rstrip('/')}/predictions/{model}", data=path.read_bytes(),
                        headers=headers, timeout=timeout)


def request_json(url: str, *, data: bytes | None = None, headers: dict | None = None,
                 timeout: float = 60, method: str | None = None) -> dict | list:
    """One HTTP request whose answer is JSON; errors become ServingErrors that say why."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise ServingError(_error_message(error.code, error.read()), error.code) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if data and isinstance(reason, ConnectionResetError | BrokenPipeError):
            raise ServingError(f"{url} closed the connection while receiving "
                               f"{len(data) / 2**20:.1f} MB: likely over the server's "
                               "max_request_size (serve.max_request_mb); send a shorter "
                               "recording (cut it with ffmpeg -t)") from None
        raise ServingError(f"no answer from {url} ({reason}); is the server running? start it "
                           "with sempair.serving.server.start_server (`sempair serve`)") from None


def _error_message(status: int, body: bytes) -> str:
    """The server's own message: sempair's {"error": ...} or TorchServe's {"message": ...}."""
    try:
        content = json.loads(body) if body else {}
    except ValueError:
        content = {"message": body[:500].decode("utf-8", "replace")}
    if isinstance(content.get("error"), dict):
        return f"HTTP {status}: {content['error'].get('message')}"
    if content.get("type") == "InvalidKeyException":
        return f"HTTP {status}: TorchServe refused the token (missing, wrong or expired); " \
               f"{TOKEN_HELP}"
    if status == 413 and not content:
        return (f"HTTP {status}: the request is larger than the server's max_request_size "
                "(serve.max_request_mb); send a shorter recording (cut it with ffmpeg -t)")
    message = content.get("message") or f"no message (status {status})"
    return f"HTTP {status}: {message}"


def read_token(workdir: str | Path, kind: str = "inference") -> str:
    """The server's `inference` (or `management`, `API`) token from WORKDIR/key_file.json."""
    path = Path(workdir) / KEY_FILE
    if not path.is_file():
        raise ServingError(f"{path} not found: no TorchServe runs from {workdir} (or it runs "
                           "with token authorization off); start it with start_server")
    try:
        keys = json.loads(path.read_text())
    except ValueError:
        raise ServingError(f"{path} is not complete JSON (TorchServe may be writing it); "
                           "try again in a moment") from None
    if kind not in keys:
        raise ServingError(f"{path} has no {kind!r} token; choose one of {sorted(keys)}")
    expires = keys[kind].get("expiration time")
    if expires and _parse_time(expires) < datetime.now(UTC):
        raise ServingError(f"the {kind} token in {path} expired at {expires}; {TOKEN_HELP}")
    return keys[kind]["key"]


def _parse_time(text: str) -> datetime:
    """TorchServe's ISO instants carry nanoseconds; Python's parser takes microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed)


# -- a readable table -------------------------------------------------------------------------

def format_prediction(result: dict) -> str:
    """The prediction as a table: one line per clip, then the summary and any problems."""
    model, summary = result.get("model", {}), result.get("summary", {})
    events = ", ".join(f"{name} ×{n}" for name, n in summary.get("events", {}).items())
    lines = [f"model {model.get('name')} {model.get('version')} · mode {result.get('mode')} · "
             f"{summary.get('clips', 0)} clips · events: {events or 'none'} · anomalies: "
             f"{summary.get('anomalies', 0)}",
             f"{'clip (s)':>13}  {'event':<20} {'prob':>5}  {'anomaly':>9}  most similar "
             "past clip"]
    lines += [_clip_line(clip) for clip in result.get("clips", [])]
    lines += [f"note: {problem}" for problem in result.get("media", {}).get("problems", [])]
    return "\n".join(lines)


def _clip_line(clip: dict) -> str:
    span = f"{clip['start']:.1f}–{clip['end']:.1f}"
    score = clip.get("anomaly_score")
    anomaly = "—" if score is None else f"{score:.3f}{' !' if clip.get('anomalous') else '  '}"
    similar = clip.get("similar") or []
    best = f"{similar[0]['recording']} @ {similar[0]['start']:.1f} s ({similar[0]['score']:.2f})" \
        if similar else "—"
    return (f"{span:>13}  {clip['event']:<20} {clip['probability']:>5.2f}  {anomaly:>9}  "
            f"{best}")
