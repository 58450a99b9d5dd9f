"""Job files: validation with errors that name the key, exact variant counts, stable hashing."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from augengine.config import load_job, parse_job
from augengine.errors import ConfigError

BASE = {
    "name": "t",
    "seed": 3,
    "sources": [{"reader": "oasbud", "path": "x.mat"}],
    "steps": [
        {"op": "bmode", "sweep": {"dynamic_range_db": [40, 50, 60]}},
        {"op": "roi_crop", "sweep": {"margin_mm": [2, 5, 10]}},
        {"op": "scan_convert"},
        {"one_of": [
            {"op": "identity"},
            {"op": "rotate90", "sweep": {"k": [1, 2, 3]}},
            {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}, "repeats": 2},
        ]},
    ],
    "output": {"path": "out.zarr", "size": [224, 224], "shard_size": 256},
}


def job(**changes):
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_variant_count_is_product_of_step_alternatives():
    config = parse_job(job())
    # 3 dynamic ranges x 3 margins x 1 x (1 + 3 + 2)
    assert len(config.chains()) == 54, f"expected 54 variants, got {len(config.chains())}"


def test_chains_hold_swept_values_in_order():
    chains = parse_job(job()).chains()
    assert chains[0][0] == ("bmode", {"dynamic_range_db": 40})
    assert chains[-1][0] == ("bmode", {"dynamic_range_db": 60})
    assert chains[1][3] == ("rotate90", {"k": 1})


def nst_changes(**nst):
    """Changes that make ``job()`` a style-transfer job with these ``nst`` settings (with a
    decoder checkpoint unless ``mode`` is ``iterative``)."""
    model = {} if nst.get("mode") == "iterative" else {"checkpoint": "decoder.pt"}
    return {"sources": [{"reader": "store", "path": "originals.zarr"}], "steps": [],
            "nst": {**model, **nst}}


@pytest.mark.parametrize("changes, needle", [
    ({"steps": [{"op": "bmode", "dynamic_range_db": -3}]}, "dynamic_range_db"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "warp"}]}, "unknown op 'warp'"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "rotate90", "k": 5}]}, "k"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "flip", "axis": "diagonal"}]},
     "'horizontal' or 'vertical'"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "jpeg", "quality": 100}]},
     "quality"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50},
                {"op": "rotate", "angle_deg": {"uniform": [10, -10]}}]}, "lo <= hi"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "flip", "axis": "horizontal",
                                                          "repeats": 2}]}, "repeats > 1"),
    ({"steps": [{"op": "scan_convert"}]}, "add a 'bmode' step first"),
    ({"steps": [{"op": "bmode", "sweep": {"dynamic_range_db": []}}]}, "sweep.dynamic_range_db is empty"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50, "sweep": {"dynamic_range_db": [40]}}]},
     "both fixed and swept"),
    ({"steps": [{"nop": 1}]}, "exactly one of 'op' or 'one_of'"),
    ({"output": {"path": "o", "shard_size": 0}}, "shard_size"),
    ({"output": {"path": "o", "size": [2, 224]}}, "size"),
    ({"sources": [{"reader": "tiff", "path": "x"}]}, "reader"),
    ({"sources": [{"reader": "oasbud", "path": "x"}, {"reader": "busi", "path": "y"}]},
     "mix RF readers"),
    ({"workers": 0}, "workers"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": float("nan")}]},
     "dynamic_range_db: Input should be a finite number"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50},
                {"op": "srad", "iterations": 5, "q0": float("inf")}]},
     "q0: Input should be a finite number"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50},
                {"op": "rotate", "angle_deg": {"uniform": [0.0, float("nan")]}}]},
     "angle_deg: Input should be a finite number"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50},
                {"op": "rotate", "angle_deg": {"uniform": [0.0, "1e9"]}}]},
     "angle_deg: {uniform: [lo, hi]} needs two numbers, got [0.0, '1e9']"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50},
                {"op": "rotate90", "k": {"randint": [1, 2.5]}}]},
     "k: {randint: [lo, hi]} needs two integers"),
    (nst_changes(mode="iterative", lrp=False, beta=float("inf")),
     "nst.beta: Input should be a finite number"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "resize", "size": [100000, 64]}]},
     "size: each side must be in [8, 8192] pixels, got [100000, 64]"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "scan_convert",
                                                          "pixel_size_mm": 1e-6}]},
     "pixel_size_mm: Input should be greater than or equal to 0.01"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "roi_crop", "margin_px": 10**6}]},
     "margin_px: Input should be less than or equal to 8192"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50},
                {"op": "translate", "dx_px": {"uniform": [0, 1e7]}}]},
     "dx_px: Input should be less than or equal to 8192"),
    ({"seeds": 1}, "seeds"),
    (nst_changes(pairing="explicit"),
     "nst: pairs (a CSV file of sample ids) is required with pairing 'explicit' and only then"),
    (nst_changes(pairs="pairs.csv"), "pairs (a CSV file of sample ids) is required"),
    (nst_changes(pairing="within_class_k", k=2, pairs="p.csv"), "'explicit' and only then"),
    (nst_changes(allow_cross_class=True), "allow_cross_class only applies to pairing 'explicit'"),
    (nst_changes(references="multi"), "references 'multi' needs several references per output"),
    (nst_changes(references="all"), "nst.references: Input should be 'single' or 'multi'"),
    (nst_changes(pairing="random"),
     "nst.pairing: Input should be 'within_class_all', 'within_class_k' or 'explicit'"),
    (nst_changes(quality_checks=1.5), "nst.quality_checks: Input should be less than or equal"),
    (nst_changes(quality_checks="some"), "nst.quality_checks: Input should be a valid number"),
    (nst_changes(precision="bf16"), "nst.precision: Input should be 'auto' or 'fp32'"),
])
def test_bad_job_names_the_key(changes, needle):
    with pytest.raises(ConfigError) as info:
        parse_job(job(**changes), origin="job.yaml")
    message = str(info.value)
    assert needle in message, f"error should mention {needle!r}: {message}"
    assert message.startswith("job.yaml: ") and "\n" not in message


def test_step_errors_name_only_the_form_the_step_has():
    steps = [{"op": "bmode", "dynamic_range_db": 500}]
    with pytest.raises(ConfigError) as info:
        parse_job(job(steps=steps), origin="job.yaml")
    assert str(info.value) == ("job.yaml: steps[0] (bmode): dynamic_range_db: Input should be "
                               "less than or equal to 120 (parameters of bmode: dynamic_range_db)")
    steps = [{"op": "bmode", "dynamic_range_db": 50}, {"one_of": [{"op": "flip", "axis": "x"}]}]
    with pytest.raises(ConfigError) as info:
        parse_job(job(steps=steps), origin="job.yaml")
    assert str(info.value) == ("job.yaml: steps[1].one_of[0] (flip): axis: Input should be "
                               "'horizontal' or 'vertical' (parameters of flip: axis)")


@pytest.mark.parametrize("changes, message", [
    ({"steps": [{"op": "bmode", "dynamic_range": 50}]},
     "steps[0] (bmode): unknown parameter 'dynamic_range'; did you mean 'dynamic_range_db'?"),
    ({"steps": [{"op": "bmode", "sweep": {"dynamic_range": [40, 50]}}]},
     "steps[0] (bmode): unknown parameter 'dynamic_range'; did you mean 'dynamic_range_db'?"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"one_of": [{"op": "flip", "axs": "x"}]}]},
     "steps[1].one_of[0] (flip): unknown parameter 'axs'; did you mean 'axis'?"),
    ({"steps": [{"op": "bmode", "dynamic_range_db": 50}, {"op": "srad_seris"}]},
     "steps[1].op: unknown op 'srad_seris'; did you mean 'srad_series'?"),
    ({"step": []}, "unknown key 'step'; did you mean 'steps'?"),
    ({"ouput": {"path": "o"}}, "unknown key 'ouput'; did you mean 'output'?"),
    ({"output": {"path": "o", "shard_sise": 4}},
     "output: unknown key 'shard_sise'; did you mean 'shard_size'?"),
    ({"sources": [{"reader": "oasbud", "pth": "x"}]},
     "sources[0]: unknown key 'pth'; did you mean 'path'?; sources[0].path: Field required"),
    ({"sources": [{"reader": "bussi", "path": "x"}]},
     "sources[0].reader: unknown reader 'bussi'; did you mean 'busi'?"),
    (nst_changes(iteratons=3), "nst: unknown key 'iteratons'; did you mean 'iterations'?"),
])
def test_misspelt_names_get_a_did_you_mean_first(changes, message):
    """The key a misspelt one stands for is then missing too: the typo is what to report first."""
    with pytest.raises(ConfigError) as info:
        parse_job(job(**changes), origin="job.yaml")
    assert str(info.value) == f"job.yaml: {message}"


def test_unknown_op_lists_allowed_ops():
    with pytest.raises(ConfigError, match="allowed: .*bmode.*rotate90"):
        parse_job(job(steps=[{"op": "bmode", "dynamic_range_db": 40}, {"op": "twirl"}]))


@pytest.mark.parametrize("reader, steps, message", [
    ("busi", [{"op": "bmode", "dynamic_range_db": 50}],
     "steps[0] (bmode): takes rf input but sources[0] (busi) reads images; RF comes from reader "
     "oasbud or rf_npz"),
    ("oasbud", [{"op": "bmode", "dynamic_range_db": 50}, {"op": "bmode", "dynamic_range_db": 50}],
     "steps[1] (bmode): takes rf input but the data is image at this point (an earlier step "
     "made it one)"),
    ("oasbud", [{"op": "flip", "axis": "vertical"}],
     "steps[0] (flip): takes image input but the data is rf at this point (add a 'bmode' step "
     "first)"),
])
def test_a_step_for_the_other_kind_of_data_says_where_the_data_comes_from(reader, steps, message):
    """An OASBUD .mat file read with reader busi: the reader is the mistake, not the step."""
    with pytest.raises(ConfigError) as info:
        parse_job(job(sources=[{"reader": reader, "path": "x"}], steps=steps), origin="job.yaml")
    assert str(info.value) == f"job.yaml: {message}"


def test_image_sources_need_no_bmode():
    config = parse_job(job(sources=[{"reader": "busi", "path": "b"}],
                           steps=[{"op": "roi_crop", "margin_px": 4}, {"op": "flip",
                                                                        "axis": "vertical"}]))
    assert len(config.chains()) == 1


def test_config_hash_ignores_workers_but_not_output():
    a, b = parse_job(job()), parse_job(job(workers=4))
    assert a.config_hash() == b.config_hash()
    c = parse_job(job(seed=4))
    assert a.config_hash() != c.config_hash()


def test_load_job_reads_yaml_and_reports_bad_files(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job()))
    assert load_job(path).name == "t"
    with pytest.raises(ConfigError, match="not found"):
        load_job(tmp_path / "missing.yaml")
    path.write_text("steps: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(path)


def test_job_yaml_reads_floats_as_yaml_1_2(tmp_path: Path):
    # PyYAML alone (YAML 1.1) reads 1e9, 1E-3 and -.5 as strings.
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job(steps=[])) + "steps:\n"
                    "  - {op: bmode, sweep: {dynamic_range_db: [5e1, 1.2E+2]}}\n"
                    "  - {op: translate, dy_px: -.5, dx_px: 1E-3}\n"
                    "  - {op: rotate90, k: 1}\n")
    chains = load_job(path).chains()
    assert chains[0] == [("bmode", {"dynamic_range_db": 50.0}),
                         ("translate", {"dy_px": -0.5, "dx_px": 0.001}), ("rotate90", {"k": 1})]
    assert chains[1][0] == ("bmode", {"dynamic_range_db": 120.0})
    assert type(chains[0][2][1]["k"]) is int


@pytest.mark.parametrize("value, needle", [
    ("{uniform: [0.0, 1e9]}", "angle_deg: Input should be less than or equal to 360"),
    (".nan", "angle_deg: Input should be a finite number"),
])
def test_job_yaml_number_errors_name_the_key(tmp_path: Path, value, needle):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job(steps=[])) + "steps:\n"
                    "  - {op: bmode, dynamic_range_db: 50}\n"
                    f"  - {{op: rotate, angle_deg: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}: steps[1] (rotate): ") and needle in str(info.value)


def test_job_yaml_errors_give_line_and_column(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("name: t\nsources:\n  - {reader: oasbud, path: x.mat}\nsteps:\n"
                    "  - op: bmode\n   dynamic_range_db: 50\noutput: {path: o.zarr}\n")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path} line 6 column 4: not valid YAML: "), str(info.value)


def test_a_directory_is_not_a_job_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"cannot read the job file \(Is a directory\)"):
        load_job(tmp_path)


def test_packaged_demo_job_matches_jobs_demo_yaml():
    root = Path(__file__).resolve().parents[1]
    packaged = yaml.safe_load((root / "augengine/data/demo.yaml").read_text())
    example = yaml.safe_load((root / "jobs/demo.yaml").read_text())
    assert packaged == example, "jobs/demo.yaml drifted from augengine/data/demo.yaml"
    assert len(parse_job(packaged).chains()) == 36


def test_srad_steps_validate_and_count():
    steps = [{"op": "bmode", "dynamic_range_db": 50},
             {"op": "srad_series", "sweep": {"scale": list(range(8))}},
             {"op": "srad", "iterations": 10}]
    assert len(parse_job(job(steps=steps)).chains()) == 8
    with pytest.raises(ConfigError, match="scale must be < scales"):
        parse_job(job(steps=[{"op": "bmode", "dynamic_range_db": 50},
                             {"op": "srad_series", "scale": 8}]))
    with pytest.raises(ConfigError, match="time_step"):
        parse_job(job(steps=[{"op": "bmode", "dynamic_range_db": 50},
                             {"op": "srad", "iterations": 5, "time_step": 1.5}]))


@pytest.mark.parametrize("nst", [
    {"pairing": "explicit", "pairs": "pairs.csv"},
    {"pairing": "explicit", "pairs": "pairs.csv", "allow_cross_class": True,
     "references": "multi"},
    {"pairing": "within_class_k", "k": 3, "references": "multi"},
    {"pairing": "within_class_k", "k": 3, "references": "single"},
])
def test_nst_pairing_settings_that_parse(nst):
    parsed = parse_job(job(**nst_changes(**nst))).nst
    assert parsed.pairing == nst["pairing"]
    assert parsed.references == nst.get("references", "single")


@pytest.mark.parametrize("given, fraction", [(None, 0.01), (True, 1.0), (False, 0.0), (0.25, 0.25),
                                             (1, 1.0)])
def test_quality_checks_is_a_fraction_and_old_booleans_still_parse(given, fraction):
    """Job files from before the fraction said ``quality_checks: true/false``."""
    nst = {} if given is None else {"quality_checks": given}
    parsed = parse_job(job(**nst_changes(**nst))).nst
    assert parsed.quality_checks == fraction and isinstance(parsed.quality_checks, float)
    assert parsed.precision == "auto"


@pytest.mark.parametrize("nst, message", [
    ({"lrp": False},
     "nst: 'lrp' is a setting of mode 'iterative' only, this section's mode is 'feedforward'"),
    ({"mode": "iterative", "lrp": False, "alpha": 0.5},
     "nst: 'alpha' is a setting of mode 'feedforward' only, this section's mode is 'iterative'"),
    ({"mode": "iterative", "lrp": False, "iteratons": 3},
     "nst: unknown key 'iteratons'; did you mean 'iterations'?"),
    ({"mode": "painterly"}, "nst: unknown mode 'painterly'; allowed: feedforward, iterative"),
    ({"mode": "feedforward", "checkpoint": None},
     "nst.checkpoint: mode 'feedforward' needs checkpoint (a trained decoder)"),
])
def test_nst_keys_belong_to_their_mode(nst, message):
    """Feed-forward and iterative style transfer take different settings: a key of the other
    mode is named as such, in one line, not silently ignored."""
    with pytest.raises(ConfigError) as info:
        parse_job(job(**nst_changes(**nst)), origin="job.yaml")
    assert str(info.value) == f"job.yaml: {message}"


def test_each_mode_has_only_its_own_settings():
    feedforward = parse_job(job(**nst_changes())).nst
    iterative = parse_job(job(**nst_changes(mode="iterative", classifier="cls.pt"))).nst
    assert feedforward.mode == "feedforward" and iterative.mode == "iterative"
    assert not hasattr(feedforward, "lrp") and iterative.lrp is True
    assert not hasattr(iterative, "checkpoint") and not hasattr(iterative, "alpha")
    assert feedforward.model_files() == ["decoder.pt"]
    assert iterative.model_files() == ["cls.pt"]
