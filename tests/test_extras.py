"""pyproject's install extras: one CuPy/NVRTC and one DALI per CUDA major version, ``gpu`` and
``train`` the CUDA 12 ones (CI installs them), every extra the Makefile installs defined."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _cuda_major(requirement: Requirement) -> int | None:
    """The CUDA major version a requirement is built for, None for CUDA-independent packages."""
    name = requirement.name
    for pattern in (r"cupy-cuda(\d+)x", r"nvidia-dali-cuda(\d+)0", r".*-cu(\d+)"):
        match = re.fullmatch(pattern, name)
        if match:
            return int(match.group(1))
    if name.startswith("nvidia-cuda-"):  # CUDA 13 dropped the -cu13 suffix: the version says it
        majors = {int(s.version.split(".")[0]) for s in requirement.specifier
                  if s.operator in (">=", "==", "~=")}
        assert len(majors) == 1, f"{requirement}: give its CUDA major as a lower bound"
        return majors.pop()
    return None


def _requirements(extra: str) -> list[Requirement]:
    return [Requirement(text) for text in EXTRAS[extra]]


@pytest.mark.parametrize("cuda", [12, 13])
def test_each_cuda_extra_pins_packages_of_its_own_cuda_major(cuda):
    for kind, wanted in (("gpu", {"cupy", "nvrtc"}), ("train", {"dali"})):
        extra = f"{kind}-cuda{cuda}"
        assert extra in EXTRAS, f"pyproject lacks the extra {extra}"
        requirements = _requirements(extra)
        majors = {_cuda_major(r) for r in requirements} - {None}
        assert majors == {cuda}, f"{extra}: packages for CUDA {sorted(majors)}, expected {cuda}"
        found = {part for r in requirements for part in wanted if part in r.name}
        assert found == wanted, f"{extra}: expected {sorted(wanted)}, found {sorted(found)}"


def test_cuda_variants_of_an_extra_differ_only_in_cuda_packages():
    for kind in ("gpu", "train"):
        plain = [{str(r) for r in _requirements(f"{kind}-cuda{c}") if _cuda_major(r) is None}
                 for c in (12, 13)]
        assert plain[0] == plain[1], f"{kind}: CUDA 12 and 13 extras differ in {plain}"


@pytest.mark.parametrize(("alias", "target"), [("gpu", "gpu-cuda12"), ("train", "train-cuda12")])
def test_plain_extras_are_aliases_of_the_cuda12_ones(alias, target):
    assert EXTRAS[alias] == [f"augengine[{target}]"], \
        f"{alias} = {EXTRAS[alias]}, expected the alias ['augengine[{target}]']"


def test_every_extra_the_makefile_installs_exists():
    installs = re.findall(r'install .*-e "\.\[([^\]]+)\]"', (ROOT / "Makefile").read_text())
    assert installs, "no `pip install -e .[extras]` line found in the Makefile"
    missing = [e for line in installs for e in line.split(",") if e not in EXTRAS]
    assert not missing, f"Makefile installs extras pyproject does not define: {missing}"
