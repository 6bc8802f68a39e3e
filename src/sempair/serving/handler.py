"""The TorchServe handler: a thin adapter from TorchServe's batches to `Predictor`.

The only module that imports TorchServe (`ts`). torch-model-archiver copies this file into
the .mar as `handler.py`; TorchServe imports it as a top-level module and instantiates its
one class. Every request in a batch gets exactly one answer, in order: the prediction, or
`{"error": {"status": N, "message": ...}}` with that HTTP status (4xx for anything wrong
with the request, whatever raised). Bad input never fails the batch or the worker.

What TorchServe 0.12 hands over per request (`data[i]`, a dict): the raw body as `body`,
or multipart fields by name (`data`/`file` for the media, `top_k`, `embeddings`). Query
strings are dropped on /predictions, so parameters also come as the headers
`X-Sempair-Top-K` and `X-Sempair-Embeddings`. Request headers keep the client's spelling
(`Content-Type`, `Content-type`), so they are looked up case-insensitively.

Routes: the frontend hands every inference route to the same handler. It marks the request
only through two headers it adds after the client's (so it wins on its own routes):
`/predictions/<m>[/<v>]` carries `explain: False` and `url_path: ""`; `/explanations`, KServe
v1 `:explain` and v2 `/explain` carry `explain: True`; `/predictions/<m>/<v>/<more>` a non-empty
`url_path`; KServe v1 `:predict`, v2 `/infer`, `/<m>/predict`, `/models/<m>/invoke` and
`/invocations` no `url_path`. Anything but the predictions route is refused with 404
(`_check_route`). The HTTP method is NOT passed to the handler (PUT, DELETE, TRACE or a
made-up method on /predictions look exactly like POST), and `/api-description` or OPTIONS
never reach it: those are refused by the proxy in front of TorchServe (k8s/, docs/serving.md).
"""

from __future__ import annotations

import json
import logging
import os
from http import HTTPStatus
from pathlib import Path

import torch
from ts.torch_handler.base_handler import BaseHandler

from sempair.serving.predictor import Predictor, RequestError

THREADS_ENV = "SEMPAIR_SERVE_THREADS"
MEDIA_FIELDS = ("data", "file", "body")
PARAM_HEADERS = {"top_k": "x-sempair-top-k", "embeddings": "x-sempair-embeddings"}
MEDIA_TYPES = ("video/", "audio/", "application/octet-stream", "application/mp4",
               "application/x-matroska")
TRUE, FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}
SEND = ("send the media file's bytes as the body with Content-Type video/mp4 (or another "
        "video/* or audio/* type, or application/octet-stream), or as the multipart field "
        "'data'")

log = logging.getLogger(__name__)


class SempairHandler(BaseHandler):
    """TorchServe's entry point: `initialize` once per worker, `handle` per batch."""

    def initialize(self, context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        threads = _threads(model_dir)
        if threads:
            torch.set_num_threads(threads)
        self.predictor = Predictor.load(model_dir, threads=threads)
        self.context = context
        self.initialized = True
        log.info("sempair model %s %s loaded (threads=%s)", self.predictor.name,
                 self.predictor.version, torch.get_num_threads())

    def handle(self, data: list[dict], context) -> list[bytes]:
        """One JSON answer per request, in order; errors answer their own request only."""
        answers: list[dict | RequestError | None] = [None] * len(data)
        groups: dict[tuple[int | None, bool], list[tuple[int, bytes]]] = {}
        for i, row in enumerate(data):
            try:
                body, top_k, embeddings = self._request(row, context, i)
                groups.setdefault((top_k, embeddings), []).append((i, body))
            except Exception as error:   # one bad request answers alone
                answers[i] = _as_request_error(error)
        for (top_k, embeddings), members in groups.items():
            for (i, _), answer in zip(members, self._predict(members, top_k, embeddings),
                                      strict=True):
                answers[i] = answer
        return [_reply(context, i, answer) for i, answer in enumerate(answers)]

    def _request(self, row: dict, context, i: int) -> tuple[bytes, int | None, bool]:
        """(media bytes, top_k, embeddings) of request i; RequestError when unusable."""
        raw = context.get_all_request_header(i)
        _check_route(raw, getattr(context, "model_name", "<model>"))
        headers = {str(k).lower(): v for k, v in raw.items()}
        field = next((name for name in MEDIA_FIELDS if name in row), None)
        _check_type(_content_type(headers, field))
        if field is None:
            raise RequestError(f"no media in the request; {SEND}")
        body = row[field]
        if not isinstance(body, bytes | bytearray):
            raise RequestError(f"the body was not read as bytes ({type(body).__name__}); "
                               f"{SEND}", 415)
        if len(body) > self.predictor.max_bytes:
            raise RequestError(f"the body is {len(body) / 2**20:.1f} MB, over the "
                               f"{self.predictor.max_bytes / 2**20:.0f} MB limit; send a "
                               "shorter recording (cut it with ffmpeg -t)", 413)
        top_k = _top_k(_param(row, headers, "top_k"))
        return bytes(body), top_k, _flag(_param(row, headers, "embeddings"))

    def _predict(self, members: list[tuple[int, bytes]], top_k: int | None,
                 embeddings: bool) -> list[dict | RequestError]:
        """One batched pass; should it fail as a whole, each request alone."""
        bodies = [body for _, body in members]
        try:
            return self.predictor.predict_many(bodies, top_k=top_k, embeddings=embeddings)
        except Exception:   # find the request that broke the batch
            log.exception("a batch of %d failed; answering its requests one by one",
                          len(bodies))
        return [self._predict_one(body, top_k, embeddings) for body in bodies]

    def _predict_one(self, body: bytes, top_k: int | None,
                     embeddings: bool) -> dict | RequestError:
        try:
            return self.predictor.predict_media(body, top_k=top_k, embeddings=embeddings)
        except Exception as error:   # this request alone
            return _as_request_error(error)


def _threads(model_dir: Path) -> int | None:
    """Torch threads per worker: $SEMPAIR_SERVE_THREADS (the server's serve.threads), else
    the bundle's serving.json; None (torch's default) when 0 or unset."""
    value = os.environ.get(THREADS_ENV)
    if not value:
        serving = model_dir / "serving.json"
        value = json.loads(serving.read_text()).get("threads") if serving.is_file() else None
    return int(value or 0) or None


# -- request parsing -------------------------------------------------------------------------

def _check_route(raw: dict, model: str) -> None:
    """Only /predictions/<model>[/<version>], as the frontend's own `url_path` and `explain`
    headers tell (exact keys: a client's `Explain` is another key); else 404."""
    if "url_path" not in raw:
        taken = "a KServe v1/v2, /<model>/predict or /invocations route"
    elif raw.get("explain") != "False":
        taken = "the explanations API"
    elif raw["url_path"]:
        taken = "a path with more segments than /predictions/<model>/<version>"
    else:
        return
    raise RequestError(f"not found: this server answers only POST /predictions/{model} (this "
                       f"request came by {taken}); send the media there", 404)


def _content_type(headers: dict, field: str | None) -> str:
    """The media's type: the request's Content-Type, or for multipart the part's own."""
    request_type = str(headers.get("content-type") or "")
    if not request_type.lower().startswith("multipart/form-data"):
        return request_type
    part = headers.get(field or "")
    part_type = part.get("content-type") if isinstance(part, dict) else None
    return part_type or "application/octet-stream"


def _check_type(content_type: str) -> None:
    kind = content_type.split(";")[0].strip().lower()
    if not kind.startswith(MEDIA_TYPES):
        raise RequestError(f"unsupported Content-Type {kind or '(none)'!r}; {SEND}", 415)


def _param(row: dict, headers: dict, name: str) -> str | None:
    """A parameter from a multipart field, a query field or its X-Sempair-* header."""
    value = row.get(name, headers.get(PARAM_HEADERS[name]))
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    return None if value is None else str(value).strip()


def _top_k(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise RequestError(f"top_k must be a whole number, got {value!r}") from None


def _flag(value: str | None) -> bool:
    text = (value or "").lower()
    if text not in TRUE | FALSE:
        raise RequestError(f"embeddings must be true or false, got {value!r}")
    return text in TRUE


# -- answers ---------------------------------------------------------------------------------

def _as_request_error(error: Exception) -> RequestError:
    if isinstance(error, RequestError):
        return error
    log.error("unexpected failure on one request", exc_info=error)
    return RequestError(f"the request could not be processed ({type(error).__name__}: "
                        f"{error}); {SEND}", 422)


def _reply(context, i: int, answer: dict | RequestError) -> bytes:
    """The JSON body of answer i; an error also sets that request's HTTP status."""
    context.set_response_content_type(i, "application/json")
    if not isinstance(answer, RequestError):
        try:
            return json.dumps(answer, allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            answer = _as_request_error(error)
    status = answer.status
    context.set_response_status(status, _phrase(status), idx=i)
    return json.dumps({"error": {"status": status, "message": str(answer)}}).encode()


def _phrase(status: int) -> str:
    """The standard reason phrase (ASCII, one line), whatever the message holds."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
