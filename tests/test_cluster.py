"""cluster/: the configs checked against the schemas of the tools that read them, the image recipe
against pyproject, and out-of-process runs (`ray job submit` against a real head, a driver killed
with SIGKILL).

Each Ray test owns what it starts: the head runs under `ray start --block` in its own process group
and is stopped by signalling that group (never a bare `ray stop`, which would kill every Ray on
the host).

The KubeRay CRD schema is test data (no network at test time): tests/data/
kuberay_rayjob_spec_v1.7.0.json, made from KubeRay v1.7.0's CRD with

    yaml = safe_load(ray-operator/config/crd/bases/ray.io_rayjobs.yaml)
    spec = [v for v in yaml["spec"]["versions"] if v["name"] == "v1"][0]
    spec = spec["schema"]["openAPIV3Schema"]["properties"]["spec"]
    json.dumps({"$comment": ..., **drop_description_strings(spec)}, separators=(",", ":"))
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml
from packaging.requirements import Requirement

from augengine import store
from augengine.config import parse_job
from augengine.plan import make_plan
from augengine.runner import run_job
from tests import test_readme as readme
from tests.test_runner import small_job

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    """Token auth on for the head, `ray job submit` and the job (the token: conftest's
    ``RAY_AUTH_TOKEN_PATH``); `ray start` and the job client turn it on only when asked."""
    return dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
                PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def ray_head(ray_auth_token):
    """A Ray head on free ports, with token auth and its dashboard for `ray job submit`; yields
    the job server's address and the port of the node's job agent."""
    port, dashboard = free_port(), free_port()
    # Every per-node agent port too: the defaults (e.g. 52365 for the job agent) are taken by
    # the embedded Ray other tests run, and an agent that cannot bind never serves job
    # submissions ("No available agent to submit job").
    ports = {name: free_port() for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")}
    agent_ports = [f"--{name}={port}" for name, port in ports.items()]
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         "--disable-usage-stats", f"--temp-dir={temp_dir}", *agent_ports],
        env=env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                                   env=env(), capture_output=True, timeout=60)
            if probe.returncode == 0:
                break
            assert head.poll() is None, "ray start --head exited early"
            time.sleep(2)
        else:
            pytest.fail("the Ray head's job server did not come up within 90 s")
        yield SimpleNamespace(address=address, job_agent=ports["dashboard-agent-listen-port"])
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_readme_ray_job_submit_runs_as_written(ray_head, tmp_path):
    """The README's cluster block (tests/test_readme.py reads it) against a real head with token
    auth, from the repository root (`--working-dir .`), `/shared` being a temporary folder and the
    address the head's, at the tour's smaller size: the job reads its sources (`--sources`) and
    writes its store (`--output`) there, not in its uploaded copy of the repository."""
    shared = tmp_path / "shared"
    cluster = [words for block in readme.blocks("bash") for words in readme.commands(block)
               if any("/shared/" in w for w in words)]
    assert [readme._program(w) for w in cluster] == ["augengine simulate", "ray job"]
    used: set[int] = set()
    simulate, submit = ([w.replace("/shared", str(shared)) for w in readme.smaller(words, used)]
                        for words in cluster)
    code, output = readme._in_process(simulate[1:], ROOT)
    assert code == 0, output
    settings = {}
    while "=" in submit[0]:
        key, _, value = submit.pop(0).partition("=")
        settings[key] = value
    assert settings == {"RAY_AUTH_MODE": "token"}, "the README keeps token auth on"
    submit[submit.index("--address") + 1] = ray_head.address
    environment = {**env(), **settings}
    environment.pop("RAY_ADDRESS", None)
    for _ in range(40):
        done = subprocess.run(submit, cwd=ROOT, env=environment, capture_output=True, text=True,
                              timeout=300)
        if "No available agent" not in done.stderr:  # the agent starts after the job server
            break
        time.sleep(3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = submit[submit.index("--output") + 1]
    assert output.startswith(str(shared)) and store.verify_store(output) == []


def post_status(url: str, body: bytes, wait_s: float = 90) -> int:
    """HTTP status of a JSON POST, waiting for the server to listen (the job agent starts after
    the job server answers)."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    deadline = time.time() + wait_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except urllib.error.URLError:
            if time.time() > deadline:
                raise
            time.sleep(2)


@pytest.mark.slow
def test_job_apis_refuse_a_request_without_the_token(ray_head):
    """What a hostile user tried: a job posted to the head's job server and to the node's job
    agent, without the token, is refused (401) and runs nothing."""
    marker = f"hostile-{secrets.token_hex(4)}"
    job = json.dumps({"entrypoint": f"echo {marker} > /dev/null"}).encode()
    for url in (f"{ray_head.address}/api/jobs/",
                f"http://127.0.0.1:{ray_head.job_agent}/api/job_agent/jobs/"):
        assert post_status(url, job) == 401, url
    listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head.address],
                            env=env(), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and marker not in listed.stdout


@pytest.mark.slow
def test_driver_killed_with_sigkill_resumes_to_identical_bytes(ray_session, phantom_dir, tmp_path):
    """SIGKILL the `augengine run` driver mid-run, then run the same job again."""
    # Enough shards that the kill lands mid-run: 3 ranges x 3 margins x 3 variants, 2 per shard.
    job = small_job(phantom_dir, tmp_path / "ds.zarr",
                    steps=[{"op": "bmode", "sweep": {"dynamic_range_db": [40, 50, 60]}},
                           {"op": "roi_crop", "sweep": {"margin_mm": [2, 5, 10]}},
                           {"op": "scan_convert"},
                           {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "vertical"},
                                       {"op": "rotate", "angle_deg": {"uniform": [-10, 10]}}]}],
                    output={"path": str(tmp_path / "ds.zarr"), "size": [96, 96], "shard_size": 2})
    reference = parse_job(dict(job, output=dict(job["output"], path=str(tmp_path / "ref.zarr"))))
    run_job(reference, progress=False)
    n_shards = make_plan(reference).n_shards

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    driver = subprocess.Popen([str(BIN / "augengine"), "run", str(path), "--quiet"], env=env(),
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    journal = tmp_path / "ds.zarr" / "records" / "_journal"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            if journal.exists() and len(list(journal.glob("*.parquet"))) >= 3:
                break
            time.sleep(0.02)
        done_at_kill = len(list(journal.glob("*.parquet"))) if journal.exists() else 0
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, as a crash would
        driver.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # then whatever of its embedded Ray is left
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == -signal.SIGKILL
    assert 0 < done_at_kill < n_shards, f"kill landed outside the run ({done_at_kill}/{n_shards})"
    assert not (tmp_path / "ds.zarr" / "records" / "manifest.parquet").exists()

    result = run_job(parse_job(job), progress=False)
    assert result.shards_kept >= done_at_kill - 1 and result.shards_built > 0
    assert store.verify_store(tmp_path / "ds.zarr") == []
    assert ((tmp_path / "ds.zarr" / "records" / "manifest.parquet").read_bytes()
            == (tmp_path / "ref.zarr" / "records" / "manifest.parquet").read_bytes())


# --- the configs, checked against the schemas of the tools that read them --------------------------

CLUSTER = ROOT / "cluster"
CRD_SPEC = ROOT / "tests" / "data" / "kuberay_rayjob_spec_v1.7.0.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _ray_pin() -> str:
    """The one Ray version pyproject allows (``ray[...]==X``)."""
    (requirement,) = [Requirement(text) for text in PYPROJECT["dependencies"]
                      if Requirement(text).name == "ray"]
    (pin,) = requirement.specifier
    assert pin.operator == "==", f"pyproject: {requirement} must pin one Ray version"
    return pin.version


def test_launcher_config_passes_rays_autoscaler_schema():
    """`ray up cluster/onprem.yaml` validates the file against ray-schema.json after filling in
    its defaults; the file as written passes the schema too (no keys Ray has dropped)."""
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "onprem.yaml").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))
    with pytest.raises(jsonschema.ValidationError, match="'head_start_ray_comands' was unexpected"):
        jsonschema.validate(dict(config, head_start_ray_comands=[]), schema)


def _closed(schema):
    """The CRD schema with unknown fields refused: Kubernetes prunes a field its CRD lacks
    without a word, so a misspelt one would be lost silently on `kubectl apply`."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) if key != "properties" else
              {name: _closed(sub) for name, sub in value.items()} for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        closed["additionalProperties"] = False
    return closed


@pytest.fixture(scope="module")
def crd():
    """Validators of a RayJob's and a RayCluster's spec (KubeRay 1.7.0)."""
    spec = _closed(json.loads(CRD_SPEC.read_text()))
    return {"RayJob": jsonschema.Draft7Validator(spec),
            "RayCluster": jsonschema.Draft7Validator(spec["properties"]["rayClusterSpec"])}


def _ray_manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(CLUSTER.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("apiVersion") == "ray.io/v1":
                found.append((path.name, document))
    return found


def test_kuberay_manifests_use_only_fields_the_crd_defines(crd):
    manifests = _ray_manifests()
    assert sorted((name, m["kind"]) for name, m in manifests) == [
        ("kuberay.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")]
    for name, manifest in manifests:
        errors = [f"{name}: spec.{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in crd[manifest["kind"]].iter_errors(manifest["spec"])]
        assert errors == []
    cluster = dict(manifests)["kuberay.yaml"]["spec"]
    misspelt = dict(cluster, headGroupSpecs=cluster["headGroupSpec"])
    assert "'headGroupSpecs' was unexpected" in crd["RayCluster"].iter_errors(misspelt).__next__(
        ).message, "a field the CRD lacks must be refused"


def _pods(spec: dict) -> list[dict]:
    """The pod specs of a RayCluster spec: the head's, then each worker group's."""
    return [spec["headGroupSpec"]["template"]["spec"]] + [
        group["template"]["spec"] for group in spec["workerGroupSpecs"]]


@pytest.mark.parametrize("name", ["kuberay.yaml", "rayjob.yaml"])
def test_every_ray_pod_has_shared_memory_the_volume_and_the_token(name):
    (manifest,) = [m for file, m in _ray_manifests() if file == name]
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    assert spec["rayVersion"] == _ray_pin()
    for number, pod in enumerate(_pods(spec)):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}, f"{name}: pod {number}"
        (container,) = pod["containers"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts["/dev/shm"] == "dshm" and mounts["/data"] == "data", f"{name}: pod {number}"
        env = {item["name"]: item for item in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", f"{name}: pod {number}"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "augengine-ray-token", "key": "auth_token"}, f"{name}: pod {number}"
        assert container["image"].endswith(f":{PYPROJECT['version']}-ray{_ray_pin()}"), \
            f"{name}: pod {number} runs {container['image']}, not this version's image"
        assert pod["securityContext"]["runAsNonRoot"] is True
    if manifest["kind"] == "RayJob":
        assert spec["authOptions"] == {"mode": "token", "secretName": "augengine-ray-token"}


def test_the_rayjob_runs_the_demo_then_trains_on_its_store():
    """Each command of the RayJob's entrypoint parses with the real parser, paths inside the
    image are the ones cluster/Dockerfile puts there, and training reads the store the demo job
    writes."""
    from augengine.cli import build_parser as augengine_parser
    from augengine.train.cli import build_parser as train_parser

    spec = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())["spec"]
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert "COPY jobs /opt/augengine/jobs" in dockerfile
    augment = _load_augment()
    commands = [shlex.split(part) for part in spec["entrypoint"].split(" && ")]
    assert [c[:2] for c in commands] == [["augengine", "simulate"],
                                         ["python", "/opt/augengine/jobs/augment.py"],
                                         ["python", "/opt/augengine/jobs/train.py"]]
    simulate = augengine_parser().parse_args(commands[0][1:])
    run = augment.build_parser().parse_args(commands[1][2:])
    trained = train_parser(ray=True).parse_args(commands[2][2:])
    assert (ROOT / run.config.replace("/opt/augengine/", "")).is_file()
    assert run.sources == [f"{simulate.out}/phantoms.mat"] and run.output == trained.data
    # Ray Train decides GPUs from the cluster's resources; the Horovod --ray path runs on the
    # CPU-only head's view.
    assert trained.backend == "ray" and not trained.ray, "train with --backend ray"
    for path in (simulate.out, run.output, trained.out):
        assert path.startswith("/data/"), f"{path}: not on the shared volume"


def _load_augment():
    spec = importlib.util.spec_from_file_location("augment_job", ROOT / "jobs" / "augment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def test_dockerfile_pins_what_pyproject_and_the_makefile_pin():
    """The image cannot be built here (no Docker): check its recipe instead."""
    text = (CLUSTER / "Dockerfile").read_text()
    args = _dockerfile_args(text)
    makefile = (ROOT / "Makefile").read_text()
    assert args["TORCH_VERSION"] == re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, re.M)[1]
    assert args["RAY_VERSION"] == _ray_pin()
    assert re.match(r"nvidia/cuda:12\.", args["CUDA_IMAGE"]) and args["TORCH_INDEX_URL"].endswith(
        "/cu" + args["CUDA_IMAGE"].split(":")[1].replace(".", "")[:3]), \
        f"{args['CUDA_IMAGE']} and {args['TORCH_INDEX_URL']}: one CUDA 12 for both"
    assert 'pip install ".[gpu-cuda12,train-cuda12]"' in text
    extras = PYPROJECT["optional-dependencies"]
    allowed = {Requirement(t).name: Requirement(t).specifier for t in [
        *extras["gpu-cuda12"], *extras["train-cuda12"], *PYPROJECT["dependencies"]]}
    pins = {Requirement(text.replace("${", "{").format(**args)) for text in
            re.findall(r'"((?:cupy|nvidia|ray)[\w\[\],.-]*==\$\{\w+\})"', text)}
    assert {p.name for p in pins} == {"cupy-cuda12x", "nvidia-cuda-nvrtc-cu12",
                                      "nvidia-dali-cuda120", "ray"}
    for pin in pins:
        (version,) = [s.version for s in pin.specifier]
        wanted = allowed[pin.name]
        assert version in wanted, f"Dockerfile pins {pin}; pyproject allows {pin.name}{wanted}"


def test_dockerfile_builds_horovod_with_nccl_and_runs_as_a_user():
    text = (CLUSTER / "Dockerfile").read_text()
    (call,) = re.findall(r"bash (\.ci/build-horovod\.sh[^\n\\]*)", text)
    assert shlex.split(call)[1:] == ["--gpu=nccl", "${VIRTUAL_ENV}"], call
    assert "COPY .ci/build-horovod.sh ./.ci/build-horovod.sh" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"Dockerfile copies {name}, which the repo lacks"
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0"), f"the image runs as {users}"


def test_docker_build_context_leaves_outputs_out():
    """`docker build -f cluster/Dockerfile .` reads cluster/Dockerfile.dockerignore (BuildKit's
    per-Dockerfile ignore file): no venv, store or training run goes into the context."""
    ignored = [line for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    for name in (".git/", ".venv/", "runs/", "demo-output/", "**/*.zarr/"):
        assert name in ignored, f"cluster/Dockerfile.dockerignore lacks {name}"
    copied = re.findall(r"^COPY (.+) \S+$", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert not {name for source in copied for name in source.split()} & {
        entry.rstrip("/") for entry in ignored}, "the Dockerfile copies something it ignores"


def test_runtime_env_uploads_the_jobs_but_no_outputs(tmp_path):
    """Ray's own packaging of cluster/runtime_env.yaml's working_dir leaves stores, runs and
    environments behind, even with .gitignore switched off (RAY_RUNTIME_ENV_IGNORE_GITIGNORE)."""
    from ray._private.runtime_env.packaging import create_package
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    RuntimeEnv(**runtime_env)  # Ray's own validation of the fields
    assert runtime_env["working_dir"] == "."
    tree = tmp_path / "repo"
    for name in ("jobs/augment.py", "jobs/demo.yaml", "runs/cls/checkpoint.pt",
                 "demo-output/dataset.zarr/zarr.json", "data/mine.zarr/zarr.json",
                 ".venv/bin/python", ".git/HEAD", "augengine/__pycache__/x.pyc"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x")
    for include_gitignore in (False, True):
        shutil.copy(ROOT / ".gitignore", tree / ".gitignore")
        package = tmp_path / f"package-{include_gitignore}.zip"
        create_package(str(tree), package, include_gitignore=include_gitignore,
                       excludes=runtime_env["excludes"])
        with zipfile.ZipFile(package) as archive:
            files = sorted(n for n in archive.namelist() if not n.endswith("/"))
        assert files == [".gitignore", "jobs/augment.py", "jobs/demo.yaml"], files


def test_gitignore_keeps_outputs_out_of_git_and_uploads():
    ignored = (ROOT / ".gitignore").read_text().split()
    for name in ("runs/", "demo-output/", ".venv/"):
        assert name in ignored, f".gitignore lacks {name}"


def test_ray_is_pinned_to_the_installed_version_everywhere():
    import ray

    version = _ray_pin()
    assert ray.__version__ == version, f"installed Ray {ray.__version__}, pyproject {version}"
    onprem = yaml.safe_load((CLUSTER / "onprem.yaml").read_text())
    installs = [c for c in onprem["setup_commands"] if "pip install \"augengine" in c]
    assert installs and all(f'"ray[default,data]=={version}"' in c for c in installs), installs


# --- jobs/augment.py --sources: data on shared storage, not in the uploaded working dir -------------

def test_augment_sources_override_the_job_files_paths(ray_session, phantom_dir, tmp_path, capsys):
    job = small_job(phantom_dir, tmp_path / "ignored.zarr")
    job["sources"][0]["path"] = "demo-output/phantoms/phantoms.mat"  # not uploaded by Ray
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    out = tmp_path / "shared" / "ds.zarr"
    augment = _load_augment()
    code = augment.main(["--config", str(path), "--sources", str(phantom_dir / "phantoms.mat"),
                         "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    assert store.verify_store(out) == []
    manifest = pq.read_table(out / "records" / "manifest.parquet",
                             columns=["source_path"]).to_pylist()
    assert {row["source_path"] for row in manifest} == {str(phantom_dir / "phantoms.mat")}


def test_augment_sources_must_give_one_path_per_source(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(small_job(tmp_path, tmp_path / "ds.zarr")))
    code = _load_augment().main(["--config", str(path), "--sources", "a.mat", "b.mat"])
    assert (code, capsys.readouterr().err) == (2, (
        f"jobs/augment.py: error: {path}: --sources gives 2 path(s), the job has 1 source(s): "
        f"give one path per entry of sources, in order\n"))
    assert not (tmp_path / "ds.zarr").exists()
