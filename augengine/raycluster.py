"""The one way augengine reaches Ray: join a cluster, or start a private embedded one.

Ray's job API runs shell commands for whoever reaches it, so an embedded Ray must not be
reachable by anyone else: it keeps Ray's token auth on (Ray's default for a new local cluster;
the token comes from ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, which
Ray creates when none exists), listens on 127.0.0.1 only unless ``AUGENGINE_RAY_BIND=all``, and is
torn down by a small guard process if the driver dies without ``ray.shutdown()`` (``kill -9``):
Ray kills its direct children with the driver, but its dashboard and runtime-env agents stay,
listening, for a minute or more (measured with Ray 2.60: 62 s, once over 5 min) while they try
to report the raylet's death to a GCS that is gone.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time

from augengine.errors import ConfigError

BIND_ENV = "AUGENGINE_RAY_BIND"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Where Ray's job supervisor hands a submitted driver its job's runtime env (Ray 2.60:
# ray/_private/runtime_env/constants.py, read by ray.init).
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_guards: list[subprocess.Popen] = []


def connect(address: str | None = None, runtime_env: dict | None = None,
            **embedded_options) -> bool:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, as under ``ray job submit``), else start an
    embedded Ray on loopback with token auth. Returns True when this call ran ``ray.init`` (the
    caller then calls ``ray.shutdown()``), False when Ray was already initialised.

    ``embedded_options`` (e.g. ``num_cpus``, ``object_store_memory``, ``_temp_dir``) apply to an
    embedded Ray only; by default it takes every CPU and a 128 MiB object store.

    Under ``ray job submit`` ``runtime_env`` only fills in what the job's own runtime env leaves
    unset (:func:`merge_runtime_env`).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    runtime_env = merge_runtime_env(_job_runtime_env(), runtime_env)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        return True
    loopback = _loopback_requested()
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise ConfigError("RAY_AUTH_MODE is 'disabled': anyone who reaches the embedded Ray "
                          "could run commands as you; unset it (augengine's Ray needs a token)")
    options = {"num_cpus": os.cpu_count(), "include_dashboard": False,
               "object_store_memory": 128 * 1024**2, **embedded_options}
    with _loopback_only(loopback):
        context = ray.init(runtime_env=runtime_env, logging_level=logging.WARNING, **options)
    if loopback and ray.util.get_node_ip_address() not in _LOOPBACK:
        ray.shutdown()
        raise ConfigError(f"Ray {ray.__version__} ignored the request to listen on 127.0.0.1 only; "
                          f"set {BIND_ENV}=all to let the embedded Ray listen on every interface")
    _start_guard(context.address_info["session_dir"])
    return True


def merge_runtime_env(job: dict | None, ours: dict | None) -> dict | None:
    """``ours`` less every field and environment variable that the job's runtime env sets.

    ``ray.init`` inside a submitted job merges the job's runtime env (``ray job submit
    --runtime-env ...``) with the one it is given and refuses any field or variable set by both
    ("Failed to merge the Job's runtime env ..."). The job's settings are the user's, so they
    win; ours fill in the rest, and Ray's merge then keeps both.

    Parameters
    ----------
    job : dict or None
        The job's runtime env (None outside a submitted job).
    ours : dict or None
        What augengine would set.

    Returns
    -------
    dict or None
        None when nothing of ours is left.

    Examples
    --------
    >>> job = {"working_dir": ".", "env_vars": {"OMP_NUM_THREADS": "4", "MY_FLAG": "1"}}
    >>> merge_runtime_env(job, {"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": "/src"}})
    {'env_vars': {'PYTHONPATH': '/src'}}
    >>> merge_runtime_env(None, {"env_vars": {"OMP_NUM_THREADS": "1"}})
    {'env_vars': {'OMP_NUM_THREADS': '1'}}
    """
    if not ours or not job:
        return ours or None
    merged = {key: value for key, value in ours.items()
              if key != "env_vars" and key not in job}
    env_vars = {name: value for name, value in (ours.get("env_vars") or {}).items()
                if name not in (job.get("env_vars") or {})}
    if env_vars:
        merged["env_vars"] = env_vars
    return merged or None


def _job_runtime_env() -> dict | None:
    """The runtime env of the submitted job this driver runs in, or None."""
    text = os.environ.get(_JOB_CONFIG_ENV)
    if not text:
        return None
    try:
        return json.loads(text).get("runtime_env") or None
    except (ValueError, AttributeError):
        raise ConfigError(f"${_JOB_CONFIG_ENV} is not the JSON object Ray's job supervisor "
                          "writes; unset it outside `ray job submit`") from None


def _loopback_requested() -> bool:
    """True unless ``AUGENGINE_RAY_BIND=all`` asks for Ray's own choice (every interface)."""
    bind = os.environ.get(BIND_ENV, "loopback").strip().lower()
    if bind not in ("loopback", "all"):
        raise ConfigError(f"{BIND_ENV} must be 'loopback' or 'all', got {bind!r}")
    return bind == "loopback"


@contextlib.contextmanager
def _scoped_env(name: str, value: str):
    """Set an environment variable while Ray starts its processes (they inherit it)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def _loopback_only(enabled: bool):
    """Make ``ray.init`` take 127.0.0.1 as the node address, so its gRPC servers, agents and job
    API listen there only.

    Ray does this itself where clusters are unsupported (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    ray/_private/services.py ``get_node_ip_address``); ``_node_ip_address="127.0.0.1"`` does not,
    as ``ray.init`` swaps loopback for the machine's address. The variable is read when Ray is
    imported, so the constant it sets is switched too; :func:`connect` checks the result.
    """
    if not enabled:
        yield
        return
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _scoped_env(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0"):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def _start_guard(session_dir: str) -> None:
    """Start the guard of the embedded Ray whose files are in ``session_dir``: it waits for this
    process to end, then stops whatever of that Ray is left. Its own session keeps a Ctrl-C from
    reaching it."""
    import ray

    programs = [os.path.realpath(sys.executable), os.path.dirname(os.path.realpath(ray.__file__))]
    # The guard runs this very copy of augengine, wherever the driver imported it from.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    guard = subprocess.Popen([sys.executable, "-m", "augengine.raycluster", session_dir, *programs],
                             stdin=subprocess.PIPE, start_new_session=True,
                             env=dict(os.environ, PYTHONPATH=path))
    # Kept open for the life of this process: the guard reads end-of-file when it dies.
    _guards.append(guard)


def _ray_processes(session_dir: str, programs: list[str], driver: int) -> list[int]:
    """Pids of the processes that run one of ``programs`` (Python, Ray's binaries) and hold files
    of ``session_dir`` open: every Ray process keeps its logs there, while its environment and
    command line are no guide (Ray retitles them). The driver is left out, and so is a ``tail -f``
    of those logs."""
    prefix = os.path.join(session_dir, "")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (driver, os.getpid()):
            continue
        with contextlib.suppress(OSError):  # gone, or another user's
            if not os.path.realpath(f"/proc/{entry}/exe").startswith(tuple(programs)):
                continue
            fds = f"/proc/{entry}/fd"
            if any(_link(os.path.join(fds, fd)).startswith(prefix) for fd in os.listdir(fds)):
                found.append(int(entry))
    return found


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def _stop(pids: list[int], grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid for pid in pids if _running(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_running(pid) for pid in pids):
            time.sleep(0.1)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie already released its ports)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def guard(session_dir: str, programs: list[str], poll_s: float = 5.0) -> None:
    """Wait for the driver (end of file on stdin), then stop what is left of its Ray; leave early
    once Ray is gone (the driver shut it down)."""
    driver = os.getppid()
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], poll_s)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            _stop(_ray_processes(session_dir, programs, driver))
            return
        if not readable and not _ray_processes(session_dir, programs, driver):
            return


if __name__ == "__main__":
    guard(sys.argv[1], sys.argv[2:])
