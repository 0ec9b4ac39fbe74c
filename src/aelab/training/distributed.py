"""Multi-process data-parallel training under ``torchrun``.

``torchrun`` (or ``python -m torch.distributed.run``) starts one process per rank
and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each. aelab
reads them, joins the process group (gloo on CPU, NCCL on CUDA) and trains with
:class:`torch.nn.parallel.DistributedDataParallel`. Every rank draws the same
shuffled order of the rows and trains on its own slice of each global batch.
Because DDP averages the gradients, N ranks with batch B/N each take the same
optimiser steps as one process with batch B.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run; rank 0 of 1 when alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes models, checkpoints and logs."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Return True when torchrun's variables mark this process as one of several."""
    return all(v in os.environ for v in ENV_VARS) and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: str = "auto") -> tuple[DistContext, str]:
    """Join the process group that torchrun set up, if any.

    Args:
        device: The device the user asked for. Under torchrun with CUDA, "auto" and
            "cuda" become "cuda:LOCAL_RANK" so that each rank has its own GPU.

    Returns:
        The rank context and the device string to train on.
    """
    if not launched_by_torchrun():
        return DistContext(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device.startswith("cuda") or (
        device == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        device = f"cuda:{local_rank}" if device in ("auto", "cuda") else device
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    context = current()
    if context.is_main:
        logger.info(
            "joined a %s process group of %d ranks",
            dist.get_backend(),
            context.world_size,
        )
    return context, device


def current() -> DistContext:
    """Return the context of the initialised process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def broadcast_int(value: int) -> int:
    """Return rank 0's value on every rank (the value itself when alone)."""
    if not current().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place and return it."""
    if current().active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def synchronize() -> None:
    """Wait until every rank gets here (a no-op outside a process group)."""
    if current().active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
