"""Test helper: run `python -m harness ...` under accelerate's FSDP on CPU processes (gloo).

accelerate turns FSDP on only for accelerator devices (on CPU its state says MULTI_CPU and the FSDP
plugin is dropped), while torch's FSDP2 (fully_shard) itself runs on CPU. This helper flips the
state to FSDP after accelerate's own CPU set-up, so everything else is accelerate's real FSDP2 path
(sharding, cpu_ram_efficient_loading, full-state gathering, CPU offload unpinned) and ours (sharded
optimizer checkpoints, weights broadcast from rank 0). Launched by torchrun with the environment `accelerate launch` builds
from the shipped config (tests/test_training.py). Not part of the product.
"""

import sys

import accelerate
import accelerate.state as state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = state.AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = kwargs.get("fsdp_plugin") or FullyShardedDataParallelPlugin()


def _offload_without_pinning(plugin) -> None:
    # FSDP CPU offload pins its CPU copies by default, and pinning needs an accelerator; on CPU
    # processes the same policy runs unpinned (the only difference; `iwsft` prints that offload is on).
    from torch.distributed.fsdp import CPUOffloadPolicy

    if isinstance(plugin.cpu_offload, CPUOffloadPolicy) and plugin.cpu_offload.pin_memory:
        plugin.cpu_offload = CPUOffloadPolicy(pin_memory=False)


def _fsdp_on_cpu_unpinned(self, *args, **kwargs):
    _fsdp_on_cpu(self, *args, **kwargs)
    if self.distributed_type == DistributedType.FSDP:
        _offload_without_pinning(self.fsdp_plugin)


state.AcceleratorState.__init__ = _fsdp_on_cpu_unpinned

_prepare = accelerate.Accelerator.prepare


def _report_sharding(self, *args, **kwargs):
    """Say what accelerate really did with the model (the test checks it: should the flip above stop
    working, accelerate would fall back to plain data parallel and every other check would still pass)."""
    import torch
    from torch.distributed.tensor import DTensor

    out = _prepare(self, *args, **kwargs)
    for obj in out if isinstance(out, (tuple, list)) else (out,):
        if isinstance(obj, torch.nn.Module):
            params = list(obj.parameters())
            sharded = sum(isinstance(p, DTensor) for p in params)
            print(f"fsdp-launch: rank {self.process_index} distributed_type={self.distributed_type.name} "
                  f"dtensor_params={sharded}/{len(params)}", flush=True)
    return out


accelerate.Accelerator.prepare = _report_sharding

if __name__ == "__main__":
    from harness.cli import main

    sys.exit(main(sys.argv[1:]))
