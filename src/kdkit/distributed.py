"""Data-parallel training on PyTorch's own engine: DDP, launched by torchrun.

    torchrun --nproc_per_node=4 -m kdkit distill --config my.yaml            # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 --rdzv_id=kd1 -m kdkit distill ...   # on each of 2 machines

Nothing here is home-made beyond bookkeeping: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK,
`setup()` joins the process group (NCCL on GPUs, gloo on CPUs), fit() wraps the trainable module
(student + adapters) in DistributedDataParallel; the teacher is replicated on every rank, frozen
and unwrapped. `batch_size` stays the *global* batch: every rank draws the same seeded order
and augmentation for global batch b and takes its 1/world slice of it (a distributed sampler
with per-epoch seeding), so N processes see the samples one process would at the same batch size.
Metrics are summed across ranks; only rank 0 writes files (checkpoints, logs, summary, report).
"""
import os

import torch
import torch.distributed as dist

from kdkit.errors import KdkitError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or no distributed run): the one process that writes files and prints results."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or another launcher setting WORLD_SIZE) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup():
    """Join the process group torchrun describes (once); a no-op for a single process."""
    if not launched() or dist.is_initialized():
        return
    if not dist.is_available():
        raise KdkitError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; run one process")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


def local_device() -> torch.device | None:
    """cuda:LOCAL_RANK in a distributed GPU run, else None (the usual device choice applies)."""
    if world_size() > 1 and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return None


def barrier():
    if world_size() > 1:
        dist.barrier()


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across ranks (in place; returned); the tensor itself for one process."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def min_(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a global batch (contiguous, sizes differ by at most one)."""
    if world_size() == 1:
        return batch
    return torch.tensor_split(batch, world_size())[rank()]


def check_batch_size(batch_size: int):
    if batch_size % world_size():
        raise KdkitError(f"batch_size {batch_size} is the global batch and must divide evenly over "
                         f"{world_size()} processes; e.g. --set batch_size={batch_size - batch_size % world_size() or world_size()}")


def wrap(method, device: torch.device):
    """The module whose forward fit() calls: DDP around the method (its parameters are the
    student's and the adapters'; the teacher is outside the module tree, frozen, unwrapped)."""
    if world_size() == 1:
        return method
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # broadcast_buffers=False: each rank keeps its own BatchNorm statistics (rank 0's are saved)
    # and its own memory-bank rows; find_unused_parameters: FitNets' first stage trains no head
    return DistributedDataParallel(method, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
