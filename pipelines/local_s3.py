"""A throwaway S3-protocol server on 127.0.0.1: `moto_server` (moto[server], a dev
dependency), for local runs (`python -m pipelines.local --s3`) and the tests.

The MinIO server binary is not installable from the package registries this project may
use, so local runs and tests speak S3 to moto instead; the code only speaks S3.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOTO = Path(sys.executable).with_name("moto_server")
START_TIMEOUT = 30.0   # seconds for moto to answer
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1"}


@dataclass(frozen=True)
class MotoServer:
    endpoint: str               # http://127.0.0.1:PORT
    env: dict[str, str]         # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for this server
    process: subprocess.Popen

    def client(self):
        """A boto3 S3 client: an independent view of what the server holds."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.env["AWS_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def run_moto(log: Path, extra_env: dict[str, str] | None = None) -> Iterator[MotoServer]:
    """Start moto_server on a free port, wait until it answers, stop it on exit."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(extra_env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, process, log)
        yield MotoServer(endpoint, {"AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(endpoint: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited ({process.returncode}):\n"
                               f"{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1).close()
            return
        except urllib.error.HTTPError:   # an answer (403 when auth is on) is enough
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer at {endpoint} in {START_TIMEOUT} s")
