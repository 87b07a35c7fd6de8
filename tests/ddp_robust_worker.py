"""Run by tests/test_robust_training.py under torchrun: a few DDP steps, then check replicas agree."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from eval import train_robust
from manifold_defense.training import robust

if __name__ == "__main__":
    result_path, *argv = sys.argv[1:]
    config = train_robust.parse_config(robust.RobustConfig, argv)
    model = robust.train(config, train_robust.adversaries(config))
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if dist.get_rank() == 0:
        same = all(torch.equal(gathered[0], g) for g in gathered[1:])
        with open(result_path, "w") as f:
            f.write(f"{dist.get_world_size()} {int(same)}\n")
    dist.barrier()
    dist.destroy_process_group()
    # Leave without interpreter finalisation: objects still holding the gloo group (the DDP
    # wrapper's reducer) would otherwise be destroyed during shutdown, where gloo's worker threads
    # sometimes abort the process ("terminate called without an active exception", about 1 run in
    # 20) after the result above was written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
