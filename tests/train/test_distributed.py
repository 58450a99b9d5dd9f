"""The single-process / Horovod / DDP abstraction: pure helpers, and every collective on two real
ranks started by each launcher (``horovodrun --gloo`` and torchrun) through ``launch``.

Horovod is built by ``make test`` (.ci/build-horovod.sh). If it cannot be imported the Horovod
test FAILS, unless ``AUGENGINE_SKIP_HOROVOD=1`` is set, when it is skipped.
"""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from augengine.errors import ConfigError
from augengine.train.distributed import (
    Distributed,
    TorchDistributed,
    init_distributed,
    launch,
    launch_command,
    launched_backend,
)
from augengine.models.weights import state_sha256
from tests.conftest import require_horovod


# --- pure helpers -------------------------------------------------------------------------------

def test_state_sha256_is_equal_for_equal_weights_only():
    state = {"weight": torch.arange(4.0), "num_batches_tracked": torch.tensor(7)}
    same = {"num_batches_tracked": torch.tensor(7), "weight": torch.arange(4.0)}
    assert state_sha256(state) == state_sha256(same), "key order changed the hash"
    for changed in ({"weight": torch.arange(4.0), "num_batches_tracked": torch.tensor(8)},
                    {"weight": torch.arange(4.0).reshape(2, 2),
                     "num_batches_tracked": torch.tensor(7)},
                    {"weight": torch.arange(4.0).double(),
                     "num_batches_tracked": torch.tensor(7)}):
        assert state_sha256(changed) != state_sha256(state), \
            f"{changed} hashed like {state} (scalar, shape and dtype must count)"


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2"}, "horovod"),
    ({"TORCHELASTIC_RUN_ID": "abc", "RANK": "1", "WORLD_SIZE": "2"}, "ddp"),
    ({"RANK": "0", "WORLD_SIZE": "1"}, "ddp"),
    ({"RANK": "0"}, None),
])
def test_launched_backend_reads_the_launcher_environment(environ, expected):
    assert launched_backend(environ) == expected, f"environment {environ}: expected {expected}"


def test_launch_command_for_torchrun():
    command = launch_command("ddp", 3, ["/py", "job.py", "--x", "1"])
    assert command == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                       "3", "job.py", "--x", "1"], f"torchrun command {command}"


def test_launch_command_for_horovodrun():
    require_horovod()
    command = launch_command("horovod", 2, ["/py", "job.py"])
    assert command[0].endswith("horovodrun"), f"launcher {command[0]}: expected horovodrun"
    assert command[1:] == ["--gloo", "-np", "2", "-H", "localhost:2", "--disable-cache", "/py",
                           "job.py"], f"horovodrun arguments {command[1:]}"


@pytest.mark.parametrize("backend, processes, message", [
    ("mpi", 2, "backend must be one of horovod, ddp, got 'mpi'"),
    ("ddp", 1, "launching needs processes >= 2, got 1"),
    ("ddp", True, "launching needs processes >= 2, got True"),
])
def test_launch_command_rejects_bad_settings(backend, processes, message):
    with pytest.raises(ConfigError, match=message):
        launch_command(backend, processes, ["/py", "job.py"])


def test_a_process_no_launcher_started_is_the_single_process(monkeypatch):
    for name in ("HOROVOD_RANK", "TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for backend in (None, "horovod", "ddp"):
        dist = init_distributed(backend, "cpu")
        assert (type(dist), dist.rank, dist.size) == (Distributed, 0, 1), \
            f"backend {backend} outside a launcher: expected the single process"


def test_init_distributed_refuses_the_wrong_backend(monkeypatch):
    with pytest.raises(ConfigError, match="backend must be one of horovod, ddp, ray, got 'gloo'"):
        init_distributed("gloo", "cpu")
    monkeypatch.setenv("HOROVOD_RANK", "0")
    with pytest.raises(ConfigError, match="started by the horovod launcher; use --backend "
                                          "horovod"):
        init_distributed("ddp", "cpu")


def test_single_process_collectives_are_identities():
    dist = Distributed()
    model = torch.nn.BatchNorm1d(2)
    model.running_mean.fill_(3.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert dist.prepare(model, optimizer) == (model, optimizer)
    dist.broadcast_state(model, optimizer, with_optimizer=True)
    dist.average_buffers(model)
    assert model.running_mean.tolist() == [3.0, 3.0], "one rank: buffers must stay as they are"
    assert dist.sum(torch.tensor([1.5])).tolist() == [1.5]
    assert (dist.broadcast_object({"a": 1}), dist.gather_objects(7)) == ({"a": 1}, [7])


class _DDPTorch24:
    """DistributedDataParallel's constructor as of torch 2.4-2.12: no forward_sync_buffers."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False,
                 check_reduction=False, gradient_as_bucket_view=False, static_graph=False,
                 delay_all_reduce_named_params=None, param_to_hook_all_reduce=None,
                 mixed_precision=None, device_mesh=None):
        self.module, self.broadcast_buffers = module, broadcast_buffers


class _DDPTorch213:
    """torch 2.13: forward_sync_buffers added, broadcast_buffers deprecated (None by default)."""

    def __init__(self, module, device_ids=None, broadcast_buffers=None, init_sync=True,
                 forward_sync_buffers: bool | None = None):
        if broadcast_buffers is not None:
            raise AssertionError("broadcast_buffers is deprecated on torch 2.13")
        self.module, self.broadcast_buffers = module, forward_sync_buffers


@pytest.mark.parametrize("ddp_class", [_DDPTorch24, _DDPTorch213])
def test_ddp_wrap_turns_off_the_per_forward_buffer_sync_on_old_and_new_torch(monkeypatch,
                                                                             ddp_class):
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", ddp_class)
    dist = object.__new__(TorchDistributed)  # no process group: only the wrap is under test
    dist.device = torch.device("cpu")
    model = torch.nn.Linear(2, 1)
    wrapped, _ = dist.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapped.module is model and wrapped.broadcast_buffers is False, \
        f"{ddp_class.__doc__}: expected the buffer sync off (False), got " \
        f"{wrapped.broadcast_buffers}"


# --- two real ranks per launcher ----------------------------------------------------------------

RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from augengine.models.weights import state_sha256
    from augengine.train.distributed import init_distributed

    backend, out = sys.argv[1], sys.argv[2]
    dist = init_distributed(backend, "cpu")
    torch.manual_seed(dist.rank)  # different weights and data on each rank
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()  # rank-specific momentum buffers
    before = state_sha256(model.state_dict())
    dist.broadcast_state(model, optimizer, with_optimizer=True)
    momentum = optimizer.state[model[0].weight]["momentum_buffer"].flatten().tolist()
    model[1].running_var.fill_(dist.rank + 1.0)  # 1 and 2: the average is 1.5
    dist.average_buffers(model)
    running_var = model[1].running_var.tolist()
    trained, optimizer = dist.prepare(model, optimizer)
    optimizer.zero_grad()
    trained(torch.randn(4, 3) * (dist.rank + 1)).square().sum().backward()
    optimizer.step()
    dist.average_buffers(model)  # BatchNorm's running mean saw each rank's own batch
    record = {
        "rank": dist.rank, "size": dist.size, "before": before,
        "broadcast_momentum": momentum,
        "running_var": running_var,
        "after_step": state_sha256(model.state_dict()),
        "sum": dist.sum(torch.tensor([dist.rank + 1.0], dtype=torch.float64)).tolist(),
        "gathered": dist.gather_objects(f"r{dist.rank}"),
        "broadcast": dist.broadcast_object(f"from{dist.rank}"),
    }
    del trained, optimizer  # as the training loop drops its DDP wrapper before closing
    dist.close()
    with open(f"{out}/rank{record['rank']}.json", "w") as f:
        json.dump(record, f)
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_collectives_on_two_launched_ranks(backend, tmp_path):
    if backend == "horovod":
        require_horovod()
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    code = launch(backend, 2, [sys.executable, str(script), backend, str(tmp_path)])
    assert code == 0, f"{backend}: the launcher exited {code}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["size"]) for r in ranks] == [(0, 2), (1, 2)], f"{backend}: {ranks}"
    assert ranks[0]["before"] != ranks[1]["before"], "the ranks should start from different seeds"
    assert ranks[0]["broadcast_momentum"] == ranks[1]["broadcast_momentum"], \
        f"{backend}: optimizer state not broadcast from rank 0"
    assert ranks[0]["running_var"] == ranks[1]["running_var"] == [1.5, 1.5], \
        f"{backend}: running_var {[r['running_var'] for r in ranks]}, expected the average 1.5"
    assert ranks[0]["after_step"] == ranks[1]["after_step"], \
        f"{backend}: a step on different batches left the ranks with different weights"
    for record in ranks:
        assert record["sum"] == [3.0], f"{backend} rank {record['rank']}: 1 + 2 = {record['sum']}"
        assert record["gathered"] == ["r0", "r1"], f"{backend}: gathered {record['gathered']}"
        assert record["broadcast"] == "from0", f"{backend}: broadcast {record['broadcast']}"


def test_ranks_wait_for_each_other_before_leaving_unless_on_an_error():
    """A rank that tears its gloo group down while a peer still sends to it aborts the process;
    a clean close waits at a barrier first, a close on an error does not (a peer may be gone)."""
    calls = []
    torch_dist = object.__new__(TorchDistributed)
    torch_dist.dist = type("FakeDist", (), {
        "barrier": staticmethod(lambda: calls.append("barrier")),
        "destroy_process_group": staticmethod(lambda: calls.append("destroy"))})
    torch_dist.close()
    torch_dist.close(finished=False)
    assert calls == ["barrier", "destroy", "destroy"], calls
