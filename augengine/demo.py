"""``augengine demo``: simulate a small phantom set, run the demo job, verify, preview, summarise."""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from augengine.config import parse_job, read_job_file


def demo_job(out: Path) -> dict:
    """The packaged demo job (``augengine/data/demo.yaml``) with its paths under ``out``."""
    job = read_job_file(resources.files("augengine").joinpath("data/demo.yaml"))
    job["sources"][0]["path"] = str(out / "phantoms" / "phantoms.mat")
    job["output"]["path"] = str(out / "dataset.zarr")
    return job


def run_demo(out: Path, n_benign: int = 24, n_malignant: int = 24, seed: int = 2026,
             address: str | None = None) -> int:
    from augengine.plan import make_plan
    from augengine.preview import preview_store
    from augengine.runner import run_job
    from augengine.simulate import simulate_dataset
    from augengine.store import inspect_store, verify_store

    timings = {}
    t0 = time.perf_counter()
    simulate_dataset(n_benign, n_malignant, out / "phantoms", seed=seed)
    timings["simulate phantoms"] = time.perf_counter() - t0

    config = parse_job(demo_job(out), origin="augengine/data/demo.yaml")
    plan = make_plan(config)
    print(f"demo: {len(plan.refs)} phantom frames x {plan.variants} variants "
          f"= {plan.n_samples} images")
    result = run_job(config, address=address)
    timings["run (Ray, incl. start)"] = result.seconds

    t0 = time.perf_counter()
    problems = verify_store(result.path)
    timings["verify"] = time.perf_counter() - t0
    preview = preview_store(result.path, out / "preview.png")

    info = inspect_store(result.path)
    names = {0: "benign", 1: "malignant", 2: "normal"}
    print()
    print("| label | images |")
    print("|---|---:|")
    for label, n in info["by_label"].items():
        print(f"| {names.get(label, label)} | {n} |")
    print(f"| quarantined | {result.quarantined} |")
    print()
    print("| step | seconds |")
    print("|---|---:|")
    for step, seconds in timings.items():
        print(f"| {step} | {seconds:.1f} |")
    print()
    print(f"store    {result.path} ({info['bytes_on_disk'] / 1e6:.1f} MB, {info['shards']} shards)")
    print(f"preview  {preview}")
    if problems:
        print("verify   FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("verify   ok: every planned sample present once, checksums match")
    return 0
