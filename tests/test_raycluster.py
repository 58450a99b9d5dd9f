"""The embedded Ray is private: token auth on, loopback only, and gone when its driver is killed.

A Ray job API runs shell commands for whoever reaches it, so these check what another user or
host could reach, not just what augengine asks Ray for.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Setting Ray's auth mode to disabled in Python, shell, Makefile or YAML (env list) syntax.
AUTH_OFF = re.compile(r"RAY_AUTH_MODE['\"]?\s*[=:,]\s*(value\s*:\s*)?['\"]?disabled", re.I)
#: The one exception: a line that turns auth off to check that augengine refuses to go on.
REFUSAL = "# checks the refusal"
#: Enough of the embedded Ray to check: a driver that starts it and then waits to be killed.
DRIVER = """
import sys
from augengine import raycluster
raycluster.connect(num_cpus=1, object_store_memory=100 * 1024**2, _temp_dir=sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def test_no_file_turns_ray_auth_off():
    places = ["augengine", "jobs", "tests", ".ci", "cluster", "docs"]
    files = [ROOT / "Makefile", ROOT / "README.md"] + [
        path for place in places for path in (ROOT / place).rglob("*") if path.is_file()]
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in files if path.suffix not in (".pyc", ".npy", ".zarr")
                 for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1)
                 if AUTH_OFF.search(line) and not line.rstrip().endswith(REFUSAL)]
    assert offenders == []


def test_cluster_configs_demand_the_token_and_keep_ports_private():
    onprem = yaml.safe_load((ROOT / "cluster" / "onprem.yaml").read_text())
    starts = onprem["head_start_ray_commands"] + onprem["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in command
               for command in starts if "ray start" in command)
    assert "--dashboard-host=127.0.0.1" in " ".join(onprem["head_start_ray_commands"])
    assert "~/.ray/auth_token" in onprem["file_mounts"]

    ray_cluster, policy = yaml.safe_load_all((ROOT / "cluster" / "kuberay.yaml").read_text())
    head = ray_cluster["spec"]["headGroupSpec"]
    groups = [head] + ray_cluster["spec"]["workerGroupSpecs"]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {item["name"]: item for item in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    own_pods = {"ray.io/cluster": ray_cluster["metadata"]["name"]}
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"] == own_pods
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": own_pods}}]}]


def test_embedded_ray_refuses_to_start_with_auth_off():
    """Whoever set it, an embedded Ray without a token is never started."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))  # checks the refusal
    done = subprocess.run([sys.executable, "-c", DRIVER, "/tmp/unused"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and "ready" not in done.stdout
    assert "ConfigError: RAY_AUTH_MODE" in done.stderr.strip().splitlines()[-1]


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket on this host."""
    table = {}
    for family, name in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        with open(f"/proc/net/{name}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] != "0A":  # TCP_LISTEN
                    continue
                hex_address, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_address)
                # /proc prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                table[fields[9]] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return table


def _sockets_of(pid: int, table: dict) -> list[tuple[str, int]]:
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in table:
                found.append(table[target[8:-1]])
    except OSError:  # exited meanwhile
        pass
    return found


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _is_loopback(address: str) -> bool:
    return address.startswith(("127.", "::ffff:127.")) or address == "::1"


def _nothing():
    return None


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only(ray_session):
    """Every port of the GCS, raylet, agents (job API included) and workers is on 127.0.0.1:
    nothing of the embedded Ray can be reached from another host."""
    ray_session.get(ray_session.remote(_nothing).remote())  # a worker is up too
    table = _listening_sockets()
    listening = {(pid, *address) for pid in _descendants(os.getpid())
                 for address in _sockets_of(pid, table)}
    assert len(listening) >= 3, f"found too few of Ray's ports to judge: {listening}"
    exposed = sorted(entry for entry in listening if not _is_loopback(entry[1]))
    assert exposed == [], f"(pid, address, port) reachable from other hosts: {exposed}"


def _session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of a session: a dead driver's Ray stays in its session."""
    alive = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(entry))
    return alive


@pytest.mark.slow
def test_killed_driver_leaves_no_ray_behind():
    """kill -9 of the driver: Ray's dashboard and runtime-env agents, which used to stay a minute
    or more (listening) after it, are gone within seconds."""
    temp_dir = tempfile.mkdtemp(prefix="rayk", dir="/tmp")  # short: Ray's socket paths are limited
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, temp_dir], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert driver.stdout.readline().strip() == "ready", "the driver did not start Ray"
        started = _session_processes(driver.pid)
        assert len(started) > 3, f"expected the driver and its Ray, found {started}"
        driver.kill()
        driver.wait(30)
        deadline = time.monotonic() + 30
        while _session_processes(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [_name(pid) for pid in _session_processes(driver.pid)]
        assert left == [], f"still running 30 s after the driver was killed: {left}"
    finally:
        for pid in _session_processes(driver.pid):  # only what this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        driver.stdin.close()
        driver.stdout.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _name(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline") as cmdline:
        return cmdline.read().replace("\0", " ")[:60]
    return str(pid)
