"""A local TorchServe for a bundle (or a .mar): start it, ask how it is, stop it.

    served = start_server("runs/bundle", "runs/serve", cfg.serve)   # waits until it answers
    server_status("runs/serve")      # {"running": True, "healthy": True, "pid": ..., ...}
    stop_server("runs/serve")        # no process left behind

Everything TorchServe writes stays in WORKDIR:

    WORKDIR/
      model-store/<name>.mar  <name>.card.json
      config.properties        the hardened configuration (archive.write_config)
      key_file.json            the tokens (TorchServe writes it in its working folder)
      logs/                    ts_log.log, model_log.log, access_log.log, console.log
      tmp/                     TMPDIR: TorchServe's pid file, worker sockets, unpacked model
      server.json              what start_server started: pids, urls, model

TorchServe keeps its pid file in $TMPDIR and `torchserve --stop` reads it from there, so
every call here runs TorchServe with TMPDIR=WORKDIR/tmp: two servers in two folders never
see each other's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psutil

from sempair import SempairError
from sempair.config import ServeConfig
from sempair.serving.archive import build_archive, check_bundle, resolve_ports, write_config
from sempair.serving.client import ServingError, read_token, request_json

STATE = "server.json"
PID_FILE = ".model_server.pid"
JAVA_MAIN = "org.pytorch.serve.ModelServer"
LOG_TAIL = 40                   # lines of each log quoted when the start fails
POLL_S = 0.25
LOAD_FAILURES = 3               # failed model loads in a row: give up before the timeout
_LAUNCHERS: dict[str, subprocess.Popen] = {}   # launchers this process started, to reap


class ServerError(SempairError):
    """TorchServe could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Served:
    inference_url: str
    metrics_url: str
    model_name: str
    token: str          # the inference token (Authorization: Bearer ...)
    pid: int            # TorchServe's (Java) frontend process
    workdir: Path
    management_url: str


def start_server(bundle_or_mar: str | Path, workdir: str | Path, cfg: ServeConfig, *,
                 name: str | None = None, ports: dict[str, int] | None = None) -> Served:
    """Serve a bundle folder (archived first) or a .mar from WORKDIR; wait until the model
    answers, up to cfg.startup_timeout seconds. `ports` overrides cfg's (archive.resolve_ports)."""
    workdir = Path(workdir).absolute()
    running = server_status(workdir)
    if running and running["running"]:
        raise ServerError(f"TorchServe already runs from {workdir} (pid {running['pid']}); "
                          "stop it first (stop_server / `sempair serve stop`)")
    if running:             # a server that died: clear its leftovers (workers, pid file)
        stop_server(workdir)
    ports = resolve_ports(cfg, ports)
    _check_ports_free(cfg.host, ports)
    for folder in ("model-store", "logs", "tmp"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    mar_file, model = _prepare_archive(Path(bundle_or_mar), workdir / "model-store", name, cfg)
    config = write_config(workdir, workdir / "model-store", cfg, model_name=model,
                          mar_file=mar_file, ports=ports)
    (workdir / "key_file.json").unlink(missing_ok=True)     # a killed run's stale tokens
    log_offset = _log_size(workdir)
    launcher = _launch(workdir, config, cfg)
    state = {"launcher_pid": launcher.pid, "pid": None, "model": model, "mar": mar_file,
             "log_offset": log_offset,
             "inference_url": f"http://{cfg.host}:{ports['inference']}",
             "management_url": f"http://127.0.0.1:{ports['management']}",
             "metrics_url": f"http://127.0.0.1:{ports['metrics']}", "ports": ports}
    _write_state(workdir, state)
    try:
        return _wait_ready(workdir, state, launcher, cfg.startup_timeout)
    except BaseException:
        stop_server(workdir)
        raise


def stop_server(workdir: str | Path, timeout: float = 30) -> bool:
    """Stop the TorchServe started from WORKDIR and every process it started; True if one
    was running."""
    workdir = Path(workdir).absolute()
    state = _read_state(workdir) or {}
    java = _frontend(state.get("pid") or _pid_from_file(workdir))
    if java is not None:
        _torchserve(workdir, "--stop", timeout=timeout)
        _end([java], timeout)
    leftovers = _processes_of(workdir)
    _end(leftovers, timeout)
    _reap_launcher(workdir, state, timeout)
    for path in (workdir / "tmp" / PID_FILE, workdir / "key_file.json", workdir / STATE):
        path.unlink(missing_ok=True)
    return java is not None or bool(leftovers)


def server_status(workdir: str | Path) -> dict | None:
    """None if no server was started from WORKDIR, else {running, healthy, pid, urls,
    model, workers}."""
    workdir = Path(workdir).absolute()
    state = _read_state(workdir)
    if state is None:
        return None
    java = _frontend(state.get("pid") or _pid_from_file(workdir))
    status = {"running": java is not None, "healthy": False, "pid": java and java.pid,
              "model": state.get("model"), "inference_url": state.get("inference_url"),
              "management_url": state.get("management_url"),
              "metrics_url": state.get("metrics_url"), "workdir": str(workdir), "workers": []}
    if java is not None and status["model"]:
        status["healthy"] = _ping(workdir, state)
        status["workers"] = _workers(workdir, state)
    return status


def pick_free_ports(host: str = "127.0.0.1") -> dict[str, int]:
    """Five ports free right now (for tests and side-by-side servers)."""
    sockets = [socket.socket() for _ in range(5)]
    try:
        for s in sockets:
            s.bind((host, 0))
        numbers = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    names = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    return dict(zip(names, numbers, strict=True))


# -- starting --------------------------------------------------------------------------------

def _prepare_archive(source: Path, store: Path, name: str | None,
                     cfg: ServeConfig) -> tuple[str, str]:
    """(mar file name in store, model name): a bundle is archived (with cfg's workers and
    batching), a .mar copied (with its own)."""
    if source.is_dir():
        model = check_bundle(source)["model"]
        name = name or model["name"]
        build_archive(source, store, name=name, version=str(model["version"]), serve_cfg=cfg)
        return f"{name}.mar", name
    if source.suffix == ".mar" and source.is_file():
        name = name or source.stem
        target = store / f"{name}.mar"
        if source.absolute() != target.absolute():
            shutil.copyfile(source, target)
            card = source.with_name(f"{source.stem}.card.json")
            if card.is_file():
                shutil.copyfile(card, store / f"{name}.card.json")
        return target.name, name
    raise ServerError(f"{source} is neither a serving bundle folder nor a .mar file; build "
                      "one with sempair.serving.build_bundle or archive.build_archive")


def _check_ports_free(host: str, ports: dict[str, int]) -> None:
    busy = []
    for name, port in ports.items():
        address = host if name == "inference" else "127.0.0.1"
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise ServerError(f"cannot listen on {address}:{port} ({error.strerror}); "
                                      "set serve.host to an address of this machine") from None
                busy.append(f"{name} {address}:{port}")
    if busy:
        raise ServerError(f"ports in use: {', '.join(busy)}; stop what holds them, or choose "
                          "others (serve.*_port in params.yaml, or ports=pick_free_ports())")


def _environment(workdir: Path, threads: int = 0) -> dict[str, str]:
    """TorchServe's environment: TMPDIR and logs inside WORKDIR, no TS_CONFIG_FILE (it
    would override --ts-config), the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "TS_CONFIG_FILE"}
    tmp, logs = str(workdir / "tmp"), str(workdir / "logs")
    env |= {"TMPDIR": tmp, "TEMP": tmp, "LOG_LOCATION": logs, "METRICS_LOCATION": logs,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    if threads > 0:
        env |= {"SEMPAIR_SERVE_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return env


def _torchserve_command() -> list[str]:
    script = Path(sys.executable).parent / "torchserve"
    if script.is_file():
        return [str(script)]
    found = shutil.which("torchserve")
    if found is None:
        raise ServerError("torchserve not found; install torchserve==0.12.0 and Java 17 "
                          "(pip install -e '.[dev]' installs torchserve)")
    return [found]


def _launch(workdir: Path, config: Path, cfg: ServeConfig) -> subprocess.Popen:
    """`torchserve --foreground` in its own session: it outlives this process, and its
    launcher reaps the Java frontend when that stops."""
    if shutil.which("java", path=_environment(workdir)["PATH"]) is None \
            and not os.environ.get("JAVA_HOME"):
        raise ServerError("java not found: TorchServe needs Java 17 (apt install "
                          "openjdk-17-jre-headless, or set JAVA_HOME)")
    command = [*_torchserve_command(), "--start", "--foreground", "--ncs", "--ts-config",
               str(config), "--model-store", str(workdir / "model-store")]
    with open(workdir / "logs" / "console.log", "ab") as console:
        launcher = subprocess.Popen(command, cwd=workdir, env=_environment(workdir, cfg.threads),
                                    stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    _LAUNCHERS[str(workdir)] = launcher
    return launcher


def _wait_ready(workdir: Path, state: dict, launcher: subprocess.Popen,
                timeout: float) -> Served:
    """Poll until /ping is healthy and a worker of the model is READY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            _fail(workdir, f"TorchServe exited (code {launcher.returncode}) while starting")
        if state["pid"] is None and (pid := _pid_from_file(workdir)):
            state["pid"] = pid
            _write_state(workdir, state)
        if _load_failures(workdir, state["log_offset"]) >= LOAD_FAILURES:
            _fail(workdir, f"the model failed to load {LOAD_FAILURES} times")
        if state["pid"] and _ping(workdir, state) and any(
                w["status"] == "READY" for w in _workers(workdir, state)):
            return Served(state["inference_url"], state["metrics_url"], state["model"],
                          read_token(workdir), state["pid"], workdir, state["management_url"])
        time.sleep(POLL_S)
    _fail(workdir, f"the model was not ready after {timeout:g} s (serve.startup_timeout)")


def _fail(workdir: Path, why: str) -> NoReturn:
    logs = workdir / "logs"
    tails = "\n".join(f"--- {path} (last {LOG_TAIL} lines) ---\n{_tail(path)}"
                      for path in (logs / "model_log.log", logs / "ts_log.log",
                                   logs / "console.log") if path.is_file())
    cause = _last_error(logs / "model_log.log")
    raise ServerError(f"{why}; TorchServe was stopped.{cause} The logs say:\n{tails}\nfix "
                      "what they name (a broken bundle: build it again; a busy port: choose "
                      "another; a slow machine: raise serve.startup_timeout)")


def _last_error(log: Path) -> str:
    """The worker's last `SomethingError: message` line, if any."""
    if not log.is_file():
        return ""
    found = re.findall(r"MODEL_LOG - (\w+(?:\.\w+)*(?:Error|Exception): .*)",
                       log.read_text(errors="replace"))
    return f" The model's worker said: {found[-1]}" if found else ""


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL:])


def _log_size(workdir: Path) -> int:
    log = workdir / "logs" / "ts_log.log"
    return log.stat().st_size if log.is_file() else 0


def _load_failures(workdir: Path, offset: int) -> int:
    """Failed model loads logged since this start (ts_log.log grows across starts)."""
    log = workdir / "logs" / "ts_log.log"
    if not log.is_file():
        return 0
    with open(log, "rb") as handle:
        handle.seek(offset)
        return handle.read().count(b"Load model failed")


# -- asking ----------------------------------------------------------------------------------

def _ping(workdir: Path, state: dict) -> bool:
    try:
        answer = request_json(f"{state['inference_url']}/ping", timeout=5, headers={
            "Authorization": f"Bearer {read_token(workdir)}"})
    except ServingError:
        return False
    return isinstance(answer, dict) and answer.get("status") == "Healthy"


def _workers(workdir: Path, state: dict) -> list[dict]:
    """The model's workers ({id, pid, status}) from the management API; [] if unknown."""
    try:
        answer = request_json(f"{state['management_url']}/models/{state['model']}", timeout=5,
                              headers={"Authorization":
                                       f"Bearer {read_token(workdir, 'management')}"})
    except ServingError:
        return []
    return [{"id": w.get("id"), "pid": w.get("pid"), "status": w.get("status")}
            for model in answer for w in model.get("workers", [])]


# -- stopping --------------------------------------------------------------------------------

def _torchserve(workdir: Path, *args: str, timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired, ServerError):   # then ended by pid
        subprocess.run([*_torchserve_command(), *args], cwd=workdir, env=_environment(workdir),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       check=False)


def _end(processes: list[psutil.Process], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL what is left; zombies count as gone."""
    alive = [p for p in processes if _alive(p)]
    for p in alive:
        _signal(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    for p in alive:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def _reap_launcher(workdir: Path, state: dict, timeout: float) -> None:
    launcher = _LAUNCHERS.pop(str(workdir), None)
    if launcher is not None:
        try:
            launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
        return
    pid = state.get("launcher_pid")
    if pid and (p := _process(pid)) is not None and _ours(p, workdir):
        _end([p], timeout)


def _processes_of(workdir: Path) -> list[psutil.Process]:
    """Live processes started for WORKDIR: TorchServe's launcher, frontend, workers and
    metric collectors all run with TMPDIR=WORKDIR/tmp."""
    found = []
    for p in psutil.process_iter():
        if p.pid != os.getpid() and _ours(p, workdir) and _alive(p):
            found.append(p)
    return found


def _ours(p: psutil.Process, workdir: Path) -> bool:
    try:
        return p.environ().get("TMPDIR") == str(workdir / "tmp")
    except (psutil.Error, OSError):
        return False


def _frontend(pid: int | None) -> psutil.Process | None:
    """The Java frontend with this pid, if it still runs."""
    p = _process(pid)
    try:
        return p if p is not None and _alive(p) and JAVA_MAIN in p.cmdline() else None
    except psutil.Error:
        return None


def _process(pid: int | None) -> psutil.Process | None:
    try:
        return psutil.Process(pid) if pid else None
    except psutil.Error:
        return None


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(p: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        p.send_signal(sig)


# -- state -----------------------------------------------------------------------------------

def _pid_from_file(workdir: Path) -> int | None:
    path = workdir / "tmp" / PID_FILE
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_state(workdir: Path) -> dict | None:
    path = workdir / STATE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_state(workdir: Path, state: dict) -> None:
    path = workdir / STATE
    path.with_suffix(".tmp").write_text(json.dumps(state, indent=2) + "\n")
    path.with_suffix(".tmp").replace(path)


__all__ = ["Served", "ServerError", "pick_free_ports", "server_status", "start_server",
           "stop_server"]
