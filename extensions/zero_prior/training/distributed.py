"""Keep trained tensors identical on every data-parallel rank (several GPUs under ``accelerate launch``).

Under ai-toolkit's multi-GPU launch every rank runs the whole trainer on its
own batches, so a trained tensor stays the same everywhere only if every rank
steps with the same gradient. Nothing does that for the placeholder vectors:
they belong to no module ai-toolkit hands to ``accelerator.prepare``. Its LoRA
is not averaged either: the network is wrapped in ``DistributedDataParallel``,
but that wrapper's ``forward`` never runs (the LoRA modules patch the frozen
layers' ``forward`` instead), and DDP only arms its gradient all-reduce in
its own ``forward``.

So the trainer averages these gradients itself, by calling
``average_gradients`` at the same point on every rank, after each backward and
before the gradients are clipped and stepped:

- an explicit call, not a gradient hook (``register_hook``,
  ``register_post_accumulate_grad_hook``): a hook fires only on the ranks
  whose backward reached the tensor. SDTrainer swaps a non-finite loss for a
  fresh zero leaf, so that rank would skip the collective while the others
  wait in it, or pair with the next one. A call every rank makes always matches, and
  a rank without a gradient takes part with zeros;
- after each backward, and gradient accumulation still counts every micro-batch
  once: after the first call the accumulated ``.grad`` is the same on every
  rank, and the mean over ranks of ``accumulated + new`` is
  ``accumulated + mean(new)``. Calling it only once before the step gives the
  same mean (up to rounding); a sum without the division is what would count
  earlier micro-batches again;
- before the clip, like DDP: the norm is then taken of the mean gradient, and
  it is the same on every rank.

``broadcast_from_main`` copies rank 0's tensors to every rank once, before
training (``broadcast_objects_from_main`` does the same for plain values such
as the step a resume starts from, which ai-toolkit reads on rank 0 only).
The DDP wrapper did that for the LoRA when it was built; nothing does it for
the placeholder, whose start is only expected to agree (a seeded draw, or the
same file read by every rank on a resume).

All of them are collectives: every rank must call them, in the same order, so never
from code only the main process runs (saving, sampling). They do nothing in a
single process, or when no process group is initialised. ``any_rank`` lets the
ranks agree to skip a step together when one of them failed it (ai-toolkit
skips a step that ran out of memory, which would otherwise leave that rank's
next collective paired with the others' current one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import distributed as dist

MAIN_RANK = 0
# Bytes of gradient per all-reduce: DDP's default bucket size.
BUCKET_BYTES = 25 * 2**20


def average_gradients(parameters: Iterable[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Replace each tensor's ``.grad`` with its mean over all ranks (what DDP's all-reduce gives).

    Tensors of one device and dtype are reduced in buckets of about
    ``bucket_bytes``, so the temporary copy stays small next to the gradients
    themselves (DDP buckets for the same reason). A rank where a tensor has no
    ``.grad`` adds zeros; a tensor without ``.grad`` on every rank keeps
    ``None``, so the optimizer skips it as it would in one process.
    """
    size = world_size()
    if size == 1:
        return
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for tensor in parameters:
        groups[(tensor.device, tensor.dtype)].append(tensor)
    with torch.no_grad():
        for (device, _), tensors in groups.items():
            has_grad = torch.tensor([t.grad is not None for t in tensors], dtype=torch.int32, device=device)
            has_grad = has_grad.to(_communication_device(device))
            dist.all_reduce(has_grad, op=dist.ReduceOp.SUM)
            reduced = [t for t, count in zip(tensors, has_grad.tolist()) if count > 0]
            for bucket in _buckets(reduced, bucket_bytes):
                grads = [t.grad.reshape(-1) if t.grad is not None else t.new_zeros(t.numel()) for t in bucket]
                flat = torch.cat(grads).to(_communication_device(device))
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                flat.div_(size)
                for tensor, mean in zip(bucket, flat.split([t.numel() for t in bucket])):
                    mean = mean.view(tensor.shape).to(device)
                    if tensor.grad is None:
                        tensor.grad = mean.clone()
                    else:
                        tensor.grad.copy_(mean)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank (a collective: every rank must call it)."""
    if world_size() == 1:
        return flag
    count = torch.tensor([int(flag)], device=_communication_device(torch.device("cpu")))
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return bool(count.item())


def broadcast_from_main(parameters: Iterable[torch.Tensor]) -> None:
    """Overwrite each tensor, in place, with rank 0's value."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in parameters:
            buffer = tensor.detach().to(_communication_device(tensor.device))
            dist.broadcast(buffer, src=MAIN_RANK)
            tensor.copy_(buffer)


def broadcast_objects_from_main(values: list[Any]) -> list[Any]:
    """Rank 0's ``values`` (picklable) on every rank; ``values`` itself in a single process."""
    if world_size() == 1:
        return values
    values = list(values)
    dist.broadcast_object_list(values, src=MAIN_RANK)
    return values


def world_size() -> int:
    """Ranks in the default process group (1 without one: plain single-process training)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def _buckets(tensors: list[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of ``tensors`` of at most ``limit`` bytes each (a larger tensor goes alone)."""
    bucket: list[torch.Tensor] = []
    used = 0
    for tensor in tensors:
        size = tensor.numel() * tensor.element_size()
        if bucket and used + size > limit:
            yield bucket
            bucket, used = [], 0
        bucket.append(tensor)
        used += size
    if bucket:
        yield bucket


def _communication_device(device: torch.device) -> torch.device:
    """Where a tensor on ``device`` can take part in a collective.

    accelerate starts several GPUs with the ``nccl`` backend alone, which moves
    only CUDA tensors; a tensor kept on the CPU (a LoRA layer offloaded by ai-toolkit)
    goes through this rank's GPU.
    """
    if device.type == "cpu" and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return device
