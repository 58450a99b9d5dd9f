"""``augengine train`` without ``--loader``/``--backend``: DALI and Horovod where installed, else
the PyTorch loader and torch DDP, said in one line (``make demo`` installs neither)."""
from __future__ import annotations

import pytest

from augengine.train import cli

BASE = ["classifier", "--data", "d.zarr", "--out", "o"]


def _chosen(monkeypatch, capsys, installed: set[str], argv: list[str], ray: bool = False):
    monkeypatch.setattr(cli, "_installed", lambda module: module in installed)
    args = cli.build_parser(ray=ray).parse_args(BASE + argv)
    cli._choose_defaults(args, ray=ray)
    return args.loader, args.backend, capsys.readouterr().err


def test_everything_installed_keeps_the_recipe_and_says_nothing(monkeypatch, capsys):
    chosen = _chosen(monkeypatch, capsys, {"nvidia.dali", "horovod.torch"}, ["--processes", "2"])
    assert chosen == ("dali", "horovod", "")


def test_neither_installed_falls_back_in_one_line(monkeypatch, capsys):
    loader, backend, said = _chosen(monkeypatch, capsys, set(), ["--processes", "2"])
    assert (loader, backend) == ("torch", "ddp")
    assert said == ("NVIDIA DALI and Horovod are not installed: using --loader torch and "
                    "--backend ddp (install with the train extra and .ci/build-horovod.sh, "
                    "docs/install.md)\n")


@pytest.mark.parametrize(("argv", "said"), [
    ([], "NVIDIA DALI is not installed: using --loader torch (install with the train extra, "
         "docs/install.md)\n"),  # one process: the backend is not used
    (["--processes", "2", "--loader", "torch"],
     "Horovod is not installed: using --backend ddp (install with .ci/build-horovod.sh, "
     "docs/install.md)\n"),
    (["--processes", "2", "--loader", "dali", "--backend", "horovod"], ""),  # asked for: kept
])
def test_only_what_was_left_out_is_chosen_and_said(monkeypatch, capsys, argv, said):
    assert _chosen(monkeypatch, capsys, set(), argv)[2] == said


def test_ray_ranks_stay_horovod(monkeypatch, capsys):
    """``--ray`` runs Horovod ranks (RayExecutor): no DDP fallback there."""
    assert _chosen(monkeypatch, capsys, {"nvidia.dali"}, ["--ray", "--processes", "2"],
                   ray=True) == ("dali", "horovod", "")


def test_installed_is_false_for_a_missing_package():
    assert cli._installed("augengine") and not cli._installed("no_such_package_xyz.sub")
