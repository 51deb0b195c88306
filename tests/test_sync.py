"""Several processes sampling together: every rank calls each model as often as the others until
the last row anywhere is done (what FSDP and ZeRO-3 need: each forward is collective there), and
agreeing changes no token. Two CPU processes over gloo (tests/ranks_worker.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ranks_worker.py")


def _ranks(tmp_path, *flags):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parents[1]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--standalone",
            str(WORKER),
            str(tmp_path),
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ranks_that_finish_apart_call_forward_together_and_write_the_same_tokens(tmp_path):
    zero, one = _ranks(tmp_path)
    for case in zero:
        # rank 1's rows stop early, rank 0's run to the end: the ranks do finish apart ...
        assert max(one[case]["lengths"]) < min(zero[case]["lengths"]) == 32, case
        # ... yet call each model equally often, and agreeing changes no token of either rank
        assert zero[case]["calls"] == one[case]["calls"], case
        assert zero[case]["equal_to_alone"] and one[case]["equal_to_alone"], case


def test_without_agreeing_the_ranks_call_forward_a_different_number_of_times(tmp_path):
    """The same ranks, each sampler on its own: the call counts differ (the check above has
    power)."""
    zero, one = _ranks(tmp_path, "--alone")
    for case in zero:
        assert zero[case]["calls"] != one[case]["calls"], case


def test_fsdp_and_zero3_count_as_sharded_ddp_does_not():
    """Under sharding every process evaluates (synced); under DDP only the main process does."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from adaswitch_lib.distill import is_sharded

    def fake(kind, stage=None):
        plugin = SimpleNamespace(zero_stage=stage) if stage else None
        return SimpleNamespace(
            distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin)
        )

    assert is_sharded(fake(DistributedType.FSDP))
    assert is_sharded(fake(DistributedType.DEEPSPEED, 3))
    # ZeRO-2: whole weights on every process
    assert not is_sharded(fake(DistributedType.DEEPSPEED, 2))
    assert not is_sharded(fake(DistributedType.MULTI_GPU)) and not is_sharded(
        fake(DistributedType.NO)
    )


@pytest.mark.parametrize(
    "name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero3", "DEEPSPEED")]
)
def test_accelerate_reads_the_shipped_configs(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(
        str(WORKER.parents[1] / "configs" / "accelerate" / f"{name}.yaml")
    )
    assert str(config.distributed_type).endswith(kind)
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3
