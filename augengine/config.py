"""Job files as typed data: YAML -> validated ``JobConfig``, with errors that name the key.

A job says where samples come from (``sources``), what to do with each (``steps``) and where the
result goes (``output``). Each step is either one op or a ``one_of`` list of alternative ops; an op
may ``sweep`` parameters over lists of values, draw parameters at random per sample
(``{uniform: [lo, hi]}``, ``{choice: [...]}``) and be ``repeats``-ed. Every alternative of every
step multiplies the number of outputs per input sample, so the plan is exact before anything runs::

    name: demo
    seed: 7
    sources:
      - {reader: oasbud, path: phantoms/phantoms.mat}
    steps:
      - {op: bmode, sweep: {dynamic_range_db: [40, 50, 60]}}      # x3
      - {op: roi_crop, sweep: {margin_mm: [2, 5, 10]}}            # x3
      - {op: scan_convert}
      - one_of:                                                   # x3
          - {op: identity}
          - {op: flip, axis: horizontal}
          - {op: rotate, angle_deg: {uniform: [-15, 15]}}
    output: {path: out/dataset.zarr, size: [224, 224], shard_size: 256}

Relative paths are resolved against the working directory of the process that loads the job.
"""
from __future__ import annotations

import contextvars
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError,
                      field_validator, model_validator)

from augengine.errors import ConfigError, did_you_mean, unknown
from augengine.pipeline import OPS, RANDOM_KINDS, STRICT, ImageSize, validate_op_params
from augengine.nst_defaults import ALPHA, BATCH_SIZE, BETA, CONTENT_LAYERS, ITERATIONS, STYLE_LAYERS
from augengine.registry import import_plugins

class _Strict(BaseModel):
    model_config = STRICT


class SourceConfig(_Strict):
    reader: Literal["oasbud", "rf_npz", "busi", "dicom", "store"]
    path: str
    #: Reader keyword arguments, e.g. ``{fs_hz: 40e6, pitch_m: 3e-4}`` for OASBUD files.
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("reader", mode="before")
    @classmethod
    def _known_reader(cls, name):
        allowed = get_args(cls.model_fields["reader"].annotation)
        if isinstance(name, str) and name not in allowed:
            raise ValueError(unknown("reader", name, allowed))
        return name


class OutputConfig(_Strict):
    path: str
    size: ImageSize = (224, 224)
    shard_size: int = 256

    @field_validator("shard_size")
    @classmethod
    def _positive_shard(cls, value):
        if not 1 <= value <= 65536:
            raise ValueError(f"must be in [1, 65536] samples, got {value}")
        return value


def _op_step_schema(schema: dict[str, Any]) -> None:
    """Let editors check op names and each op's parameter names (their values stay open: a
    parameter may be a number or a random spec)."""
    schema["properties"]["op"]["enum"] = sorted(OPS)
    schema["allOf"] = [
        {"if": {"properties": {"op": {"const": name}}},
         "then": {"propertyNames": {"enum": ["op", "sweep", "repeats",
                                             *OPS[name].params.model_fields]}}}
        for name in sorted(OPS)]


class OpStep(BaseModel):
    """One op; keys other than ``op``, ``sweep`` and ``repeats`` are the op's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_op_step_schema)
    op: str
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    repeats: int = 1

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @field_validator("op")
    @classmethod
    def _known_op(cls, name):
        if name not in OPS:
            raise ValueError(unknown("op", name, sorted(OPS)))
        return name

    @field_validator("repeats")
    @classmethod
    def _positive_repeats(cls, value):
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _check_params(self):
        for key, values in self.sweep.items():
            if key in self.params:
                raise ValueError(f"parameter {key!r} is both fixed and swept")
            if not values:
                raise ValueError(f"sweep.{key} is empty")
        has_random = False
        for combo in self.parameter_sets():
            has_random |= any(_is_random(v) for v in combo.values())
            validate_op_params(self.op, combo)
        if self.repeats > 1 and not has_random:
            raise ValueError("repeats > 1 only makes sense with a random parameter "
                             "({uniform: [lo, hi]} or {choice: [...]}); otherwise outputs repeat")
        return self

    def parameter_sets(self) -> list[dict[str, Any]]:
        """The op's alternatives: the product of the swept values, each ``repeats`` times."""
        keys = sorted(self.sweep)
        combos = [dict(self.params, **dict(zip(keys, values)))
                  for values in itertools.product(*(self.sweep[k] for k in keys))]
        return [combo for combo in combos for _ in range(self.repeats)]


class OneOfStep(_Strict):
    one_of: list[OpStep]

    @field_validator("one_of")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("one_of needs at least one op")
        return value


def _step_kind(step) -> str:
    is_op = isinstance(step, OpStep) or (isinstance(step, dict) and "op" in step)
    return "op" if is_op else "one_of"


#: A step is validated as the form its key names (``parse_job`` checks there is exactly one), so
#: an error in an op's parameters is not followed by what the step lacks to be a ``one_of``.
Step = Annotated[Annotated[OpStep, Tag("op")] | Annotated[OneOfStep, Tag("one_of")],
                 Discriminator(_step_kind)]


def _is_random(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in RANDOM_KINDS


class _NstSettings(_Strict):
    """Style transfer between the job's input images (seed 002): every (content, reference(s))
    row the ``pairing`` rule plans becomes one output (K outputs for K references unless
    ``references: multi``), then goes through the job's ``steps`` (e.g. SRAD, as the paper
    post-processes). The settings both modes share; each mode adds its own
    (:class:`FeedforwardNstConfig`, :class:`IterativeNstConfig`)."""

    #: Local ResNet weights: feed-forward, the encoder the decoder was trained with (checked by
    #: sha256; None for the seeded random encoder); iterative, the feature network (ImageNet).
    encoder_weights: str | None = None
    #: Which reference(s) style each content image (``augengine.nst.pairs``): every image of its
    #: class (``within_class_all``, the paper's plan), ``k`` random others of its class
    #: (``within_class_k``), or the rows of the CSV file ``pairs`` (``explicit``, see
    #: ``augengine.nst.pairs.read_pairs_csv``), in file order.
    pairing: Literal["within_class_all", "within_class_k", "explicit"] = "within_class_all"
    k: int | None = None
    pairs: str | None = None
    #: Explicit pairing only: accept references of another class than the content image.
    allow_cross_class: bool = False
    #: A row with K references makes K outputs, one per reference (``single``), or one output
    #: styled by all K together (``multi``: the multi-reference target of Eqs. 7-9).
    references: Literal["single", "multi"] = "single"
    batch_size: int = Field(default=BATCH_SIZE, ge=1, le=4096)
    #: Reproducible style-transfer bytes on a GPU (``augengine.determinism``): torch's
    #: deterministic algorithms, TF32 off, and every batch padded to ``batch_size``. Slower on a
    #: GPU; ``false`` trades that for speed (docs/store.md, "Regeneration guarantees").
    deterministic: bool = True
    #: Fraction of outputs whose quality is recorded (SSIM to the content image, style distance
    #: to the style target before and after, at the decoder's style layers): each plan row is
    #: drawn, seeded by (job seed, row), whatever the shards and batches
    #: (:func:`augengine.nst.quality.is_assessed`); its rows say ``assessed``. Assessing one
    #: output costs 4-9x generating it with the default network (float32 both;
    #: benchmarks/bench_quality.py on a CPU, docs/nst.md "Quality checks"), so the default, 1 %,
    #: keeps checking under 10 % of generation. ``true``/``false`` (older job files) mean 1.0
    #: and 0.0.
    quality_checks: float = Field(default=0.01, ge=0, le=1)

    @field_validator("quality_checks", mode="before")
    @classmethod
    def _checks_as_fraction(cls, value):
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        return value

    @model_validator(mode="after")
    def _settings_match_rule(self):
        if (self.pairing == "within_class_k") != (self.k is not None):
            raise ValueError("k is required with pairing 'within_class_k' and only then")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if (self.pairing == "explicit") != (self.pairs is not None):
            raise ValueError("pairs (a CSV file of sample ids) is required with pairing "
                             "'explicit' and only then")
        if self.allow_cross_class and self.pairing != "explicit":
            raise ValueError("allow_cross_class only applies to pairing 'explicit'; the other "
                             "rules pair images within their class")
        if self.references == "multi" and self.pairing == "within_class_all":
            raise ValueError("references 'multi' needs several references per output: pairing "
                             "'within_class_k' or 'explicit'")
        return self


class FeedforwardNstConfig(_NstSettings):
    """``mode: feedforward`` (the default): a trained AdaIN decoder, one pass per pair."""

    mode: Literal["feedforward"] = "feedforward"
    #: ``checkpoint.pt`` of ``augengine.train.nst_decoder`` (a local file); the loss it was
    #: trained with (layers, LRP) is recorded there.
    checkpoint: str = Field(default=None, validate_default=True)
    #: Content-style trade-off of AdaIN, 1 = full style.
    alpha: float = Field(default=ALPHA, ge=0, le=1)
    #: Decoder precision. ``auto``: on a GPU, bf16 autocast and channels-last (the decoder's last
    #: convolution and its output stay float32, so the uint8 result moves by less than one grey
    #: level); on a CPU, float32. ``fp32``: float32 everywhere. Under ``deterministic`` a bf16 run
    #: is still reproducible on the same GPU and software, but its bytes differ from a float32
    #: run's (docs/nst.md, "Precision").
    precision: Literal["auto", "fp32"] = "auto"

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _needs_checkpoint(cls, value):
        if value is None:
            raise ValueError("mode 'feedforward' needs checkpoint (a trained decoder)")
        return value

    def model_files(self) -> list[str]:
        """The local files the style transfer reads besides the images."""
        return [p for p in (self.checkpoint, self.encoder_weights) if p is not None]


class IterativeNstConfig(_NstSettings):
    """``mode: iterative``: optimise each output from its content image (the paper's method;
    ~minutes per image on a CPU)."""

    mode: Literal["iterative"]
    #: Feature network, steps, style weight and layers (Eq. 1, w_l = 1).
    arch: Literal["resnet18", "resnet50"] = "resnet50"
    iterations: int = Field(default=ITERATIONS, ge=1, le=100000)
    beta: float = Field(default=BETA, gt=0)
    content_layers: list[str] = Field(default_factory=lambda: list(CONTENT_LAYERS))
    style_layers: list[str] = Field(default_factory=lambda: list(STYLE_LAYERS))
    #: Weight the content loss by the content image's LRP relevance for this local classifier
    #: (the paper's XAI term); ``lrp: false`` reproduces its "without XAI" row.
    lrp: bool = True
    classifier: str | None = Field(default=None, validate_default=True)

    @field_validator("classifier")
    @classmethod
    def _lrp_needs_classifier(cls, value, info):
        if value is None and info.data.get("lrp"):
            raise ValueError("mode 'iterative' with lrp needs classifier (a local checkpoint); "
                             "or set lrp: false")
        return value

    def model_files(self) -> list[str]:
        """The local files the style transfer reads besides the images."""
        return [p for p in (self.encoder_weights, self.classifier) if p is not None]


NST_MODES = {"feedforward": FeedforwardNstConfig, "iterative": IterativeNstConfig}


def _nst_mode(section) -> str | None:
    """The ``mode`` an ``nst`` section names (``feedforward`` when it names none)."""
    if isinstance(section, dict):
        return section.get("mode", "feedforward")
    return getattr(section, "mode", None)


#: The ``nst`` section, validated as the model of its ``mode``: a key of the other mode is an
#: error there, not a setting silently ignored.
NstConfig = Annotated[Annotated[FeedforwardNstConfig, Tag("feedforward")]
                      | Annotated[IterativeNstConfig, Tag("iterative")],
                      Discriminator(_nst_mode)]


class JobConfig(_Strict):
    """A job (``augengine.Job``): built from keywords, a mapping (:func:`parse_job`) or a YAML
    file (:func:`load_job`), every way validated alike and refused with one ``ConfigError`` line.
    """

    name: str = "augment"
    seed: int = 0
    #: Modules imported before the steps are checked, each registering its own ops
    #: (``augengine.register_op``); they must be importable wherever the job runs. Before
    #: ``steps``: pydantic validates fields in this order.
    plugins: list[str] = Field(default_factory=list)
    sources: list[SourceConfig]
    #: Style transfer before ``steps``: outputs are (content, style) pairs of the inputs.
    nst: NstConfig | None = None
    steps: list[Step] = Field(default_factory=list)
    output: OutputConfig
    #: Number of Ray actors; default: one per GPU, else one per CPU of the cluster.
    workers: int | None = None

    def __init__(self, /, **data: Any):
        origin = _ORIGIN.get()
        _check_step_forms(data, origin)
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(_format_validation_error(error, origin)) from None

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules):
        import_plugins(modules)
        return modules

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, value):
        if not value:
            raise ValueError("at least one source is required")
        return value

    @field_validator("nst", mode="before")
    @classmethod
    def _known_mode(cls, section):
        if section is None or isinstance(section, tuple(NST_MODES.values())):
            return section
        if not isinstance(section, dict):
            raise ValueError(f"must be a mapping of style-transfer settings, got {section!r}")
        if _nst_mode(section) not in NST_MODES:
            raise ValueError(unknown("mode", _nst_mode(section), NST_MODES))
        return section

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, value):
        if value is not None and value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _domains_chain(self):
        rf = {s.reader for s in self.sources} & {"oasbud", "rf_npz"}
        image = {s.reader for s in self.sources} - {"oasbud", "rf_npz"}
        if rf and image:
            raise ValueError("sources mix RF readers (oasbud, rf_npz) with image readers "
                             "(busi, dicom, store); use one kind per job")
        domain = "rf" if rf else "image"
        if self.nst is not None and domain != "image":
            raise ValueError("nst: style transfer works on B-mode images; read them from a store "
                             "(reader: store) or an image folder, not from RF")
        for i, step in enumerate(self.steps):
            ops = [step] if isinstance(step, OpStep) else step.one_of
            outs = set()
            for op in ops:
                spec = OPS[op.op]
                if spec.domain_in not in (domain, "any"):
                    raise ValueError(f"steps[{i}] ({op.op}): takes {spec.domain_in} input but "
                                     + self._why_data_is(domain))
                outs.add(domain if spec.domain_out == "same" else spec.domain_out)
            if len(outs) > 1:
                raise ValueError(f"steps[{i}]: alternatives in one_of must produce the same kind of data")
            domain = outs.pop()
        if domain != "image":
            raise ValueError("steps: RF data must be turned into an image; add a 'bmode' step")
        return self

    def _why_data_is(self, domain: str) -> str:
        if domain == "rf":
            return "the data is rf at this point (add a 'bmode' step first)"
        if self.sources[0].reader in ("oasbud", "rf_npz"):
            return "the data is image at this point (an earlier step made it one)"
        # Images from the start: the reader, not the step, is the likely mistake (an OASBUD
        # .mat file given to reader busi).
        return (f"sources[0] ({self.sources[0].reader}) reads images; RF comes from reader "
                f"oasbud or rf_npz")

    def chains(self) -> list[list[tuple[str, dict[str, Any]]]]:
        """Every variant as a list of ``(op, params)``; params may hold random specs."""
        if not self.steps:
            return [[("identity", {})]]
        per_step = []
        for step in self.steps:
            ops = [step] if isinstance(step, OpStep) else step.one_of
            per_step.append([(op.op, params) for op in ops for params in op.parameter_sets()])
        return [list(chain) for chain in itertools.product(*per_step)]

    def config_hash(self) -> str:
        """sha256 of everything that determines the output (not ``workers``)."""
        payload = self.model_dump(mode="json", exclude={"workers"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


#: The model behind each section of a job, whose fields an unknown key there may misspell (the
#: keys of an op step are its op's parameters, checked by ``validate_op_params``).
_SECTIONS = {"sources": SourceConfig, "output": OutputConfig, "steps": OneOfStep}


def _unknown_nst_key(key: str, mode: str) -> str:
    """An ``nst`` key its mode does not have: a setting of the other mode, or a misspelling of a
    setting of either (the fix may be the key or the mode)."""
    for other, model in NST_MODES.items():
        if other != mode and key in model.model_fields:
            return f"{key!r} is a setting of mode {other!r} only, this section's mode is {mode!r}"
    every = dict.fromkeys(field for model in NST_MODES.values() for field in model.model_fields)
    hint = did_you_mean(key, every) or f"allowed: {', '.join(NST_MODES[mode].model_fields)}"
    return f"unknown key {key!r}; {hint}"


def _format_validation_error(error: ValidationError, origin: str) -> str:
    parts = []
    # An unknown key first: a misspelt key also makes the key it stands for missing.
    for item in sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden"):
        loc = list(item["loc"])
        if loc[:1] == ["steps"] and len(loc) > 2:
            del loc[2]  # the step's form (its ``Step`` tag), which its key already names
        msg = item["msg"].removeprefix("Value error, ")
        mode = loc.pop(1) if loc[:1] == ["nst"] and len(loc) > 1 and loc[1] in NST_MODES else None
        if item["type"] == "extra_forbidden" and mode is not None:
            msg = _unknown_nst_key(loc.pop(), mode)
        elif item["type"] == "extra_forbidden":
            model = _SECTIONS[loc[0]] if len(loc) > 1 else JobConfig
            msg = unknown("key", loc.pop(), model.model_fields)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        if loc and isinstance(loc[-1], int) and isinstance(item["input"], dict) \
                and isinstance(item["input"].get("op"), str):
            where += f" ({item['input']['op']})"
        parts.append(f"{where}: {msg}" if where else msg)
    return f"{origin}: " + "; ".join(parts[:4])


#: What a job's errors name first: its file, or "job" for one built in Python.
_ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("job_origin", default="job")


def _check_step_forms(data: dict, origin: str) -> None:
    steps = data.get("steps")
    if isinstance(steps, list):
        for i, step in enumerate(steps):
            if isinstance(step, BaseModel):
                continue
            if not (isinstance(step, dict) and ("op" in step) != ("one_of" in step)):
                raise ConfigError(f"{origin}: steps[{i}]: each step needs exactly one of 'op' or "
                                  f"'one_of', got {step!r}")


def parse_job(data: Any, origin: str = "job") -> JobConfig:
    """Validate a job given as plain data (the parsed YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a job file must be a mapping with keys sources, steps, output")
    strange = next((key for key in data if not isinstance(key, str)), None)
    if strange is not None:
        raise ConfigError(f"{origin}: {unknown('key', strange, JobConfig.model_fields)}")
    token = _ORIGIN.set(origin)
    try:
        return JobConfig(**data)
    finally:
        _ORIGIN.reset(token)


class _JobLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``1e9``,
    ``1E-3`` and ``-.5`` load as strings and ``{uniform: [0.0, 1e9]}`` fails far from its cause.
    YAML 1.2 (like JSON and Python) reads them as numbers; integers stay integers.
    """


_FLOAT_TAG = "tag:yaml.org,2002:float"
_JobLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_JobLoader.add_implicit_resolver(_FLOAT_TAG, re.compile(r"""^(?:
      [-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
    | [-+]?[0-9]+[eE][-+]?[0-9]+
    | [-+]?\.(?:inf|Inf|INF)
    | \.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def read_job_file(path) -> Any:
    """The plain data of a YAML job file (a path, or a package resource). Every job file is read
    here, so ``augengine``, ``jobs/augment.py`` and the demo agree on what a job says."""
    path = Path(path) if isinstance(path, str) else path
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the job file ({error.strerror})") from None
    try:
        return yaml.load(text, Loader=_JobLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path} line {mark.line + 1} column {mark.column + 1}" if mark else str(path)
        detail = ", ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: not valid YAML: {detail}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None


def load_job(path: str | Path) -> JobConfig:
    """Read and validate a YAML job file."""
    return parse_job(read_job_file(path), origin=str(path))


def as_job(job_or_path) -> JobConfig:
    """A validated job from a job (returned as it is), a mapping with a job file's keys, or the
    path of a YAML job file: what ``augengine.plan`` and ``augengine.run`` accept. ``ConfigError``
    (one line) if it is not a valid job."""
    if isinstance(job_or_path, JobConfig):
        return job_or_path
    if isinstance(job_or_path, Mapping):
        return parse_job(dict(job_or_path), origin="job")
    if isinstance(job_or_path, (str, Path)):
        return load_job(job_or_path)
    raise ConfigError(f"a job is an augengine.Job, a mapping or a YAML file path, got "
                      f"{type(job_or_path).__name__}")
