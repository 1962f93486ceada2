"""The Space image's start-up, run outside Docker: ``ui/start.sh`` (the CMD of Dockerfile and Dockerfile.cpu) in a
fresh virtual environment, from a read-only copy of the image's application directory, with the Space's environment.

What stands for what:

* The image's files: the repository's files (``git ls-files --cached --others --exclude-standard``: a fresh clone
  plus new files not yet committed) less what ``.dockerignore`` excludes, copied to a temporary folder. A file the
  app needs but ``.dockerignore`` drops (the embedded model, say) fails here as it would on the Space.
* The image's virtual environment: a new venv (``python -m venv --without-pip``, the same base interpreter) whose
  site-packages holds one ``.pth`` file adding this interpreter's site-packages, i.e. the packages requirements.txt
  installs. A real ``pip install -r requirements.txt`` needs the network and minutes; a ``--system-site-packages``
  venv would not see them (they live in .venv, not in the system). The venv is otherwise new: it is the ``python``
  first on ``PATH``, and nothing of the test runner's environment (``VIRTUAL_ENV``, ``PYTHONPATH``, the cwd) leaks in.
* The Space's environment: ``HOME`` in a temporary folder, ``PATH`` = the venv and /usr/bin:/bin, ``DIFFGEO_HOSTED=1``
  and nothing else of the runner's environment; ``HF_HOME``, ``DIFFGEO_CACHE``, ``GRADIO_TEMP_DIR`` and the rest take
  the script's defaults under ``$HOME/.cache``, as in the image. The port is a free one (``GRADIO_SERVER_PORT``); the
  server binds 0.0.0.0 as in the image and is reached on 127.0.0.1 only.
* A read-only application directory: the copy is made read-only (``chmod -R a-w``). That binds an ordinary user (the
  Space runs as user 1000) but not root, and the tests run as root in CI, where a read-only bind mount cannot be
  made either. So the check that counts is a listing of every file and folder of the copy with size, mode and
  mtime, taken before the start and after the server stopped: nothing may be created, deleted or modified (a file
  created and removed again still changes its folder's mtime).

The default run (``test_startup_serves_from_read_only_app_dir``, ~30 s) starts the server, calls the geometry lab
through ``gradio_client``, waits for the warm-up's first exported graph to land in ``$DIFFGEO_CACHE`` and stops.
``test_first_start_full_warmup`` (slow, ~6 min here; CI runs it in a step of its own) waits for the whole warm-up,
calls ``/rates`` on the default model with the ``auto`` backend, and prints the first-start figures the README quotes:
``.venv/bin/python -m pytest -p no:cacheprovider -m slow tests/test_space.py -s``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import threading
import time
import venv
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file
from test_app_e2e import free_port, tree_rss, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "ui/start.sh"
STARTUP_TIMEOUT_S = 180
FIRST_GRAPH_TIMEOUT_S = 300
WARMUP_TIMEOUT_S = 1200
# gradio_client's requests time out after httpx's 5 s by default; the warm-up's exports share the 2 busy cores
HTTPX = {"timeout": 120}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


# --------------------------------------------------------------------------------------------------------------------
# The image's files, virtual environment and environment, outside Docker
# --------------------------------------------------------------------------------------------------------------------
def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` leaves out ``rel`` (a pattern matching the path or any folder above it; ``**/``
    matches any depth). The file has no ``!`` exceptions; this reading does not support them."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        assert not pat.startswith("!"), ".dockerignore exceptions are not supported by this test"
        for p in prefixes:
            if fnmatch.fnmatchcase(p, pat):
                return True
            if pat.startswith("**/") and (fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], pat[3:])
                                          or fnmatch.fnmatchcase(p, pat[3:])):
                return True
    return False


def image_files() -> list[str]:
    """The build context's files as the Dockerfile's ``COPY . .`` sees them (relative paths)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    patterns = dockerignore_patterns()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file() and not dockerignored(f, patterns))


def copy_app(dst: Path) -> Path:
    for rel in image_files():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    return dst


def set_writable(top: Path, writable: bool) -> None:
    bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [top, *top.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode):
            path.chmod((mode | stat.S_IWUSR) if writable else (mode & ~bits))


def listing(top: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under ``top``: relative path -> (size, mode, mtime in ns)."""
    out = {}
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        out[str(path.relative_to(top))] = (st.st_size if not stat.S_ISDIR(st.st_mode) else 0, st.st_mode,
                                           st.st_mtime_ns)
    return out


def fresh_venv(where: Path) -> Path:
    """A new venv seeing the packages of the interpreter running the tests (see the module docstring)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    site = Path(sysconfig.get_paths(vars={"base": str(where), "platbase": str(where)})["purelib"])
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "diffgeo_test_packages.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(ours)))
    return where / "bin"


def space_env(tmp: Path, venv_bin: Path, port: int) -> dict[str, str]:
    """The environment the image gives the script (Dockerfile ENV), with HOME and TMPDIR in ``tmp``."""
    (tmp / "home").mkdir()
    (tmp / "tmp").mkdir()
    return {"HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmp"), "PATH": f"{venv_bin}:/usr/bin:/bin",
            "LANG": "C.UTF-8", "DIFFGEO_HOSTED": "1", "GRADIO_SERVER_PORT": str(port)}


class RssSampler(threading.Thread):
    """Peak resident memory of a process tree, sampled every 0.25 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, tree_rss(self.pid))
            self.stop.wait(0.25)


@contextlib.contextmanager
def space(tmp: Path, *app_args: str):
    """Run ``sh ui/start.sh`` from a read-only copy of the app in a fresh venv; yields a namespace with ``url``,
    ``proc``, ``log``, ``home``, ``app`` and ``rss`` (the sampler). Stops the server (its process group) on exit,
    restores write permission, and checks that the application directory is unchanged."""
    app = copy_app(tmp / "app")
    venv_bin = fresh_venv(tmp / "venv")
    port = free_port()
    env = space_env(tmp, venv_bin, port)
    log = tmp / "server.log"
    set_writable(app, False)
    before = listing(app)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(["sh", SCRIPT, *app_args], cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    rss = RssSampler(proc.pid)
    rss.start()
    run = SimpleNamespace(url=f"http://127.0.0.1:{port}/", proc=proc, log=log, home=tmp / "home", app=app, rss=rss)
    try:
        wait_for_http(run.url, proc, log, STARTUP_TIMEOUT_S)
        run.up_s = time.monotonic() - started
        yield run
    finally:
        rss.stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        after = listing(app)
        set_writable(app, True)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the app wrote into its (read-only) directory: {changed[:20]}"


def wait_for_log(run, pattern: str, timeout: float) -> str:
    """The first log line matching ``pattern``; fails at once when the warm-up fails or the server exits."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        text = run.log.read_text()
        for line in text.splitlines():
            if rx.search(line):
                return line
        assert "warm-up failed" not in text, text[-4000:]
        assert run.proc.poll() is None, f"the server exited with {run.proc.returncode}:\n{text[-4000:]}"
        time.sleep(1)
    raise TimeoutError(f"no log line matching {pattern!r} within {timeout} s:\n{run.log.read_text()[-4000:]}")


def log_time(line: str) -> datetime:
    return datetime.strptime(LOG_TIME.match(line).group(1), "%Y-%m-%d %H:%M:%S,%f")


def check_space_dirs(run) -> None:
    """Everything the app wrote went under $HOME/.cache, where the script's defaults put it."""
    cache = run.home / ".cache"
    for sub in ("huggingface", "diffgeo/artifacts", "gradio", "matplotlib"):
        assert (cache / sub).is_dir(), f"start.sh did not create {cache / sub}"
    assert sorted(p.name for p in run.home.iterdir()) == [".cache"]


# --------------------------------------------------------------------------------------------------------------------
def test_startup_serves_from_read_only_app_dir(tmp_path):
    """Comes up, answers the API, exports the warm-up's first graph into the cache, writes nothing in the app dir."""
    with space(tmp_path, "--threads", "1") as run:  # one torch thread: the test machine's 2 cores are shared
        client = Client(run.url, verbose=False, download_files=str(tmp_path / "downloads"), httpx_kwargs=HTTPX)
        plot, energy, table = client.predict("sphere", 100, 0.2, 60, 10, 5, 10, api_name="/lab")
        assert "true geodesic" in table and plot is not None
        log = run.log.read_text()
        assert "Running on local URL:  http://0.0.0.0:" in log  # bound as in the container
        assert "warm-up failed" not in log
        wait_for_log(run, r"\[1/\d+\] \S+\.onnx done", FIRST_GRAPH_TIMEOUT_S)
        assert list((run.home / ".cache/diffgeo/artifacts").rglob("*.onnx"))
        check_space_dirs(run)


def test_unwritable_cache_is_named(tmp_path):
    """A cache directory that cannot be written stops the start with a message naming its variable."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = space_env(tmp_path, Path(sys.executable).parent, free_port())
    env["DIFFGEO_CACHE"] = str(blocker / "artifacts")  # under a regular file: not creatable, even by root
    r = subprocess.run(["sh", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"DIFFGEO_CACHE={blocker / 'artifacts'} is not writable" in r.stderr
    assert "not writable: DIFFGEO_CACHE." in r.stderr
    assert "HF_HOME" not in r.stderr.split("not writable:")[-1]


@pytest.mark.slow
@pytest.mark.timeout(WARMUP_TIMEOUT_S + 300)
def test_first_start_full_warmup(tmp_path, capsys):
    """The whole first start with an empty cache: the warm-up exports every graph of the default model's auto
    backend, then ``/rates`` runs on it. Prints the figures the README quotes (time to serve, export time, peak
    memory of the server's process tree)."""
    with space(tmp_path) as run:
        done = wait_for_log(run, r"warm-up done", WARMUP_TIMEOUT_S)
        lines = run.log.read_text().splitlines()
        first = next(ln for ln in lines if LOG_TIME.match(ln))
        exports = [float(m.group(1)) for ln in lines if (m := re.search(r"\] \S+ done in ([\d.]+) s", ln))]
        assert exports, "the warm-up exported nothing (was the cache empty?)"
        example = run.app / "weights/examples/scene_20000018.png"
        client = Client(run.url, verbose=False, download_files=str(tmp_path / "downloads"), httpx_kwargs=HTTPX)
        out = client.predict(handle_file(str(example)), 8, "mean", 500, "", "default", "auto", 2, 0,
                             api_name="/rates")
        assert "onnxruntime" in out[3], out[3]
        check_space_dirs(run)
        cache_mb = sum(p.stat().st_size for p in (run.home / ".cache/diffgeo/artifacts").rglob("*") if p.is_file())
        report = (f"first start (empty cache): serving after {run.up_s:.0f} s; warm-up: {len(exports)} graphs "
                  f"exported in {sum(exports):.0f} s (done {(log_time(done) - log_time(first)).total_seconds():.0f} s "
                  f"after the first log line); peak RSS of the server {run.rss.peak / 2**20:.0f} MiB; "
                  f"cache {cache_mb / 2**20:.0f} MiB")
    with capsys.disabled():
        print(f"\n{report}")
