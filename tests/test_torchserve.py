"""A real TorchServe 0.12 on free 127.0.0.1 ports, serving a bundle of the tiny model.

One server per module (started once, always stopped): predictions equal the in-process
Predictor's, bad requests get their own 4xx JSON without hurting the worker, the hardened
config holds, and stop_server leaves no process behind.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import shutil
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import torch

from sempair import SempairError
from sempair.config import load_config
from sempair.evaluate import evaluate
from sempair.evaluate.release import make_release
from sempair.serving import Predictor, build_bundle
from sempair.serving.archive import MIB, MULTIPART_SLACK, mar_manifest, read_properties
from sempair.serving.client import (
    ServingError,
    format_prediction,
    predict_file,
    read_token,
    request_json,
)
from sempair.serving.server import (
    pick_free_ports,
    server_status,
    start_server,
    stop_server,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
                                 reason="TorchServe needs Java 17")]

LENIENT = ["evaluate.gate_macro_f1=0", "evaluate.gate_search_map=0",
           "evaluate.gate_anomaly_auc=-1", "evaluate.map_method=pca"]
MAX_MB = 1      # small request limit: the oversize checks send a few MB, not 100


@pytest.fixture(scope="module")
def serve_cfg():
    # batch settings unlike the bundle's (params.yaml), to see which ones TorchServe applies
    return dataclasses.replace(load_config().serve, max_request_mb=MAX_MB, threads=1,
                               batch_size=3, max_batch_delay_ms=40)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, small_model, synth_dataset) -> Path:
    root = tmp_path_factory.mktemp("torchserve")
    passed = evaluate(small_model, synth_dataset, root / "eval", load_config(None, LENIENT))
    if not passed.passed:     # anomaly AUC is nan when the test split has no anomaly
        pytest.skip(f"the tiny test split cannot pass any gate: {passed.gate}")
    make_release(small_model, root / "eval", root / "release")
    build_bundle(root / "release", synth_dataset, root / "bundle",
                 dataclasses.replace(load_config().serve, max_request_mb=MAX_MB))
    return root / "bundle"


@pytest.fixture(scope="module")
def served(bundle, serve_cfg, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve")
    try:
        yield start_server(bundle, workdir, serve_cfg, ports=pick_free_ports())
    finally:
        stop_server(workdir)


@pytest.fixture(scope="module")
def recording(synth_source) -> Path:
    return sorted(synth_source.rglob("*.mp4"))[0]


def post(served, body: bytes, content_type: str | None = "video/mp4", *,
         token: str | None = None, headers: dict | None = None) -> tuple[int, dict | bytes]:
    """(status, JSON body or raw bytes) of one POST /predictions/<model>."""
    sent = {"Authorization": f"Bearer {served.token if token is None else token}",
            **({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    request = urllib.request.Request(f"{served.inference_url}/predictions/{served.model_name}",
                                     data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def assert_error(answer: tuple[int, dict | bytes], status: int, words: str) -> None:
    code, body = answer
    assert code == status, body
    assert body["error"]["status"] == status
    assert re.search(words, body["error"]["message"], re.IGNORECASE), body


def worker_pids(served) -> list[int]:
    return [w["pid"] for w in server_status(served.workdir)["workers"]]


# -- the configuration -------------------------------------------------------------------------

def test_the_config_is_hardened(served, serve_cfg):
    props = read_properties(served.workdir / "config.properties")
    store = (served.workdir / "model-store").as_posix()
    for key in ("management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:")
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["enable_model_api"] == "false"
    assert props.get("disable_token_authorization", "false") == "false"
    allowed = props["allowed_urls"]
    assert re.fullmatch(allowed, f"file://{store}/other.mar")
    for outside in ("https://example.com/x.mar", "file:///etc/x.mar", f"file://{store}x/y.mar"):
        assert not re.fullmatch(allowed, outside)
    assert int(props["max_request_size"]) == MAX_MB * MIB + MULTIPART_SLACK
    assert props["metrics_mode"] == "prometheus"
    assert props["install_py_dep_per_model"] == "false"
    assert props["load_models"] == f"{served.model_name}={served.model_name}.mar"
    # the per-model settings apply only under the archive's own version (else batch size 1)
    version = mar_manifest(served.workdir / "model-store" / f"{served.model_name}.mar")
    model = json.loads(props["models"])[served.model_name][version["model"]["modelVersion"]]
    assert (model["batchSize"], model["maxBatchDelay"]) == (serve_cfg.batch_size,
                                                            serve_cfg.max_batch_delay_ms)
    described = request_json(f"{served.management_url}/models/{served.model_name}", headers={
        "Authorization": f"Bearer {read_token(served.workdir, 'management')}"})[0]
    assert (described["batchSize"], described["maxBatchDelay"], described["minWorkers"]) == (
        serve_cfg.batch_size, serve_cfg.max_batch_delay_ms, serve_cfg.workers)
    card = json.loads((served.workdir / "model-store" /
                       f"{served.model_name}.card.json").read_text())
    assert card["archive"]["torchserve"] == "0.12.0" and len(card["archive"]["sha256"]) == 64


# -- predictions ---------------------------------------------------------------------------------

def test_served_predictions_equal_the_in_process_predictor(served, bundle, recording):
    threads = torch.get_num_threads()
    try:
        local = Predictor.load(bundle, threads=1).predict_media(
            recording.read_bytes(), top_k=3, embeddings=True)
    finally:
        torch.set_num_threads(threads)
    remote = predict_file(recording, served.inference_url, served.token, served.model_name,
                          top_k=3, embeddings=True)
    assert remote["mode"] == local["mode"] == "audiovisual"
    assert len(remote["clips"]) == len(local["clips"]) > 0
    for mine, theirs in zip(remote["clips"], local["clips"], strict=True):
        assert (mine["start"], mine["event"]) == (theirs["start"], theirs["event"])
        assert [s["recording"] for s in mine["similar"]] == \
            [s["recording"] for s in theirs["similar"]]
        assert len(mine["similar"]) == 3
        # rounded to 4 digits by the predictor: equal up to one unit of that rounding
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4 + 1e-9)
        assert mine["anomaly_score"] == pytest.approx(theirs["anomaly_score"], abs=1e-4 + 1e-9)
        for kind in ("audio", "video"):
            assert mine["embedding"][kind] == pytest.approx(theirs["embedding"][kind], abs=1e-5)
    assert remote["summary"] == local["summary"]
    assert "clip (s)" in format_prediction(remote)


def test_parameters_come_as_headers_or_multipart_fields(served, recording):
    code, body = post(served, recording.read_bytes(), headers={"X-Sempair-Top-K": "1"})
    assert code == 200 and {len(c["similar"]) for c in body["clips"]} == {1}
    assert "embedding" not in body["clips"][0]
    boundary = "sempair-test-boundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n2\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; "
            f"filename=\"{recording.name}\"\r\nContent-Type: video/mp4\r\n\r\n").encode() \
        + recording.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    code, body = post(served, form, f"multipart/form-data; boundary={boundary}")
    assert code == 200 and {len(c["similar"]) for c in body["clips"]} == {2}
    assert_error(post(served, recording.read_bytes(), headers={"X-Sempair-Top-K": "many"}),
                 400, "top_k")


def test_one_batch_answers_each_request_on_its_own(served, recording):
    good = recording.read_bytes()
    sends = [(good, "video/mp4"), (b"\x00garbage" * 100, "video/mp4"), (good, "video/mp4"),
             (b"hello", "text/plain")]
    with ThreadPoolExecutor(len(sends)) as pool:
        answers = list(pool.map(lambda s: post(served, *s), sends))
    assert answers[0][0] == answers[2][0] == 200
    assert answers[0][1]["clips"] == answers[2][1]["clips"]
    assert_error(answers[1], 415, "not a media file")
    assert_error(answers[3], 415, "Content-Type")


PREDICTIONS_ROUTE = {"explain": "False", "url_path": ""}   # what the frontend adds there


def local_handler(bundle):
    """(SempairHandler, its Context) initialized on the bundle, without a server."""
    from ts.context import Context

    from sempair.serving.handler import SempairHandler

    handler = SempairHandler()
    context = Context("m", str(bundle), None, 4, None, "0.12.0")
    threads = torch.get_num_threads()
    try:
        handler.initialize(context)
    finally:
        torch.set_num_threads(threads)
    return handler, context


def test_the_handler_answers_a_batch_in_order(bundle, recording):
    """handle() itself, on a batch as TorchServe 0.12 builds it (no server)."""
    from ts.context import RequestProcessor

    handler, context = local_handler(bundle)
    good = recording.read_bytes()
    rows = [{"body": good}, {"body": b"junk" * 50}, {"body": "text"}, {"other": b"x"},
            {"data": good, "top_k": b"1"}]
    types = ["video/mp4", "video/mp4", "text/plain", "video/mp4", "multipart/form-data; b=x"]
    context.request_processor = [RequestProcessor({"Content-type": t, "data": {
        "content-type": "video/mp4"}, **PREDICTIONS_ROUTE}) for t in types]
    answers = [json.loads(a) for a in handler.handle(rows, context)]
    statuses = [context.get_response_status(i)[0] for i in range(len(rows))]
    assert statuses == [200, 415, 415, 400, 200]
    assert [a.get("error", {}).get("status") for a in answers] == [None, 415, 415, 400, None]
    assert {len(c["similar"]) for c in answers[4]["clips"]} == {1}
    assert answers[0]["clips"][0]["event"] == answers[4]["clips"][0]["event"]


def test_the_handler_refuses_every_route_but_predictions(bundle, recording):
    """The frontend's headers of each route TorchServe 0.12 hands to the handler (seen on
    the real server): only /predictions/<model>[/<version>] is answered, the rest is 404."""
    from ts.context import RequestProcessor

    handler, context = local_handler(bundle)
    routes = [PREDICTIONS_ROUTE,                                 # /predictions/m[/v]
              {"explain": "True", "url_path": ""},               # /explanations/m
              {"explain": "False", "url_path": "extra"},         # /predictions/m/v/extra
              {"explain": "False"},                              # /v1 :predict, /v2 infer
              {"explain": "True"},                               # /v1 :explain, /v2 explain
              {},                                                # /invocations, /m/predict
              {"Explain": "True", **PREDICTIONS_ROUTE}]          # a client's own header
    context.request_processor = [RequestProcessor({"Content-Type": "video/mp4", **route})
                                 for route in routes]
    rows = [{"body": recording.read_bytes()} for _ in routes]
    answers = [json.loads(a) for a in handler.handle(rows, context)]
    statuses = [context.get_response_status(i)[0] for i in range(len(rows))]
    assert statuses == [200, 404, 404, 404, 404, 404, 200]
    for answer in answers[1:-1]:
        assert "only POST /predictions/m" in answer["error"]["message"], answer


# -- bad requests ------------------------------------------------------------------------------

def test_bad_media_gets_a_4xx_json_answer(served):
    assert_error(post(served, os.urandom(4096)), 415, "not a media file")
    assert_error(post(served, b""), 400, "empty")
    with pytest.raises(ServingError, match="not a media file") as raised:
        bad = served.workdir / "bad.mp4"
        bad.write_bytes(b"\x00" * 100)
        predict_file(bad, served.inference_url, served.token, served.model_name)
    assert raised.value.status == 415


def test_a_wrong_content_type_gets_415(served, recording):
    for content_type in ("text/plain", "application/json", "image/png"):
        assert_error(post(served, recording.read_bytes(), content_type), 415, "Content-Type")
    # a form (urllib's default type) that parses reaches the handler without media
    assert_error(post(served, b"top_k=3", "application/x-www-form-urlencoded"), 415,
                 "Content-Type")


def test_an_oversized_body_gets_413(served):
    # over the handler's limit, inside TorchServe's (which leaves room for multipart)
    assert_error(post(served, b"\x00" * (MAX_MB * MIB + 1024)), 413, "MB limit")
    # over TorchServe's own limit: Netty answers 413 with an empty body from the declared
    # Content-Length alone, and closes (a client still sending may see a reset instead)
    host, port = served.inference_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", f"/predictions/{served.model_name}")
        for name, value in (("Authorization", f"Bearer {served.token}"),
                            ("Content-Type", "video/mp4"),
                            ("Content-Length", str(2 * MAX_MB * MIB + MULTIPART_SLACK))):
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and response.read() == b""
    finally:
        connection.close()
    big = served.workdir / "big.mp4"
    big.write_bytes(b"\x00" * (3 * MAX_MB * MIB))
    with pytest.raises(ServingError, match="max_request_size") as raised:
        predict_file(big, served.inference_url, served.token, served.model_name)
    assert raised.value.status in (0, 413)


def test_a_missing_or_wrong_token_is_refused(served, recording):
    # TorchServe 0.12 answers a refused token with 400 InvalidKeyException (not 401)
    for token in ("", "wrong-token"):
        code, body = post(served, recording.read_bytes(), token=token)
        assert code == 400 and body["type"] == "InvalidKeyException"
    with pytest.raises(ServingError, match="refused the token"):
        predict_file(recording, served.inference_url, "nope", served.model_name)
    assert read_token(served.workdir) == served.token


def test_the_worker_survives_a_burst_of_bad_requests(served, recording):
    before = worker_pids(served)
    bad = [(os.urandom(2048), "video/mp4"), (b"", "video/mp4"), (b"text", "text/plain"),
           (b"\x00" * (MAX_MB * MIB + 10), "audio/wav"), (b"RIFF....WAVEfmt ", "audio/wav")]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda s: post(served, *s), bad * 4))
    assert all(400 <= code < 500 for code, _ in answers), [code for code, _ in answers]
    code, body = post(served, recording.read_bytes())
    assert code == 200 and body["clips"]
    assert worker_pids(served) == before


def test_start_refuses_what_it_cannot_serve(served, bundle, serve_cfg, tmp_path):
    with pytest.raises(SempairError, match="already runs"):
        start_server(bundle, served.workdir, serve_cfg, ports=pick_free_ports())
    busy = pick_free_ports() | {"inference": int(served.inference_url.rsplit(":", 1)[1])}
    with pytest.raises(SempairError, match="ports in use: inference"):
        start_server(bundle, tmp_path / "other", serve_cfg, ports=busy)
    with pytest.raises(SempairError, match="neither a serving bundle"):
        start_server(tmp_path / "nothing.txt", tmp_path / "third", serve_cfg,
                     ports=pick_free_ports())
    (tmp_path / "half").mkdir()
    with pytest.raises(SempairError, match="not a serving bundle"):
        start_server(tmp_path / "half", tmp_path / "fourth", serve_cfg, ports=pick_free_ports())


def test_the_cli_starts_predicts_and_stops_a_server(bundle, recording, tmp_path, capsys):
    from sempair.cli import main as sempair

    ports, workdir = pick_free_ports(), tmp_path / "cli-serve"
    sets = [arg for name in ("inference", "management", "metrics")
            for arg in ("--set", f"serve.{name}_port={ports[name]}")]
    try:
        assert sempair(["serve", "start", str(bundle), "--workdir", str(workdir), *sets]) == 0
        started = capsys.readouterr().out
        assert f"POST http://127.0.0.1:{ports['inference']}/predictions/" in started
        assert "key_file.json" in started
        assert sempair(["predict", str(recording), "--workdir", str(workdir), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["clips"]
        assert sempair(["predict", str(recording), "--workdir", str(workdir)]) == 0
        assert "most similar past clip" in capsys.readouterr().out
        assert sempair(["serve", "status", "--workdir", str(workdir)]) == 0
        assert json.loads(capsys.readouterr().out)["healthy"] is True
    finally:
        assert sempair(["serve", "stop", "--workdir", str(workdir)]) == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert sempair(["serve", "status", "--workdir", str(workdir)]) == 0
    assert "not running" in capsys.readouterr().out
    assert sempair(["predict", str(recording), "--workdir", str(workdir)]) == 1
    assert "no server running" in capsys.readouterr().err


# -- stopping (last: the module's server is gone afterwards) -----------------------------------

def test_stop_server_leaves_no_process_behind(served):
    tmp = str(served.workdir / "tmp")

    def ours() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if p.environ().get("TMPDIR") == tmp and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                continue
        return found

    status = server_status(served.workdir)
    assert status["running"] and status["healthy"] and status["pid"] == served.pid
    running = ours()
    names = {p.name() for p in running}
    assert "java" in names and len(running) >= 3      # launcher, frontend, worker
    assert stop_server(served.workdir)
    assert ours() == []
    assert not psutil.pid_exists(served.pid) or \
        psutil.Process(served.pid).status() == psutil.STATUS_ZOMBIE
    assert server_status(served.workdir) is None
    assert not (served.workdir / "key_file.json").exists()
    assert not stop_server(served.workdir)
