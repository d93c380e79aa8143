"""Set-up helpers for data parallel x sequence parallel training of TNL on torch.distributed.

A 2-D DeviceMesh ("dp", "sp") covers the world: ranks of one "sp" row hold contiguous pieces of
the same sequences (sequence parallel, LASP-2), the "dp" rows hold different sequences. Every
rank holds a model replica (DDP) or a shard of it (FSDP2 over all dp x sp ranks), so gradients
are averaged over the whole world; ``lm_loss`` scales each rank's loss so that this average is
exactly the gradient of the single-process loss on the global batch (sum of token losses over
the global token count).

Typical step (see examples/train_tnl.py)::

    mesh = build_mesh(sp=2)                               # dp = world // sp
    model = parallelize_tnl(model, mesh, data_parallel="fsdp")
    batch = shard_batch(input_ids, labels, mesh)          # this rank's rows and piece
    out = model(batch.input_ids, position_offset=batch.position_offset, cu_seqlens=batch.cu_seqlens)
    loss, loss_value = lm_loss(out.logits, batch.labels, mesh)
    loss.backward()
"""
import os
from datetime import timedelta
from typing import NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

__all__ = ["init_distributed", "check_parallel_sizes", "build_mesh", "parallelize_tnl", "shard_sequence",
           "shard_batch", "ShardedBatch", "lm_loss", "ParallelContext", "setup_parallel"]

DATA_PARALLEL = ("none", "ddp", "fsdp")


def init_distributed(backend: Optional[str] = None, timeout_s: float = 600.0) -> Tuple[int, int, torch.device]:
    """Initialise the default process group from torchrun's environment; returns (rank, world, device).

    backend: "nccl" when CUDA is available, else "gloo" (None picks). On CUDA the device is
    ``cuda:LOCAL_RANK``. Without torchrun's variables (RANK, WORLD_SIZE) nothing is initialised
    and (0, 1, device) comes back, so the same script runs on one process.
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"), timeout=timedelta(seconds=timeout_s),
                                device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


def check_parallel_sizes(world_size: int, sp: int = 1, dp: Optional[int] = None) -> Tuple[int, int]:
    """Validate a dp x sp layout of ``world_size`` processes; returns (dp, sp). Pure, no collective.

    dp None means world_size // sp. Raises ValueError with the numbers when they do not fit.
    """
    if sp < 1 or (dp is not None and dp < 1):
        raise ValueError(f"parallel sizes must be >= 1, got dp={dp}, sp={sp}.")
    if world_size % sp:
        raise ValueError(f"the sequence-parallel size sp={sp} must divide the number of processes "
                         f"({world_size}); launch a multiple of {sp} processes or pick another --sp.")
    if dp is None:
        dp = world_size // sp
    if dp * sp != world_size:
        raise ValueError(f"dp x sp = {dp} x {sp} = {dp * sp} must equal the number of processes ({world_size}).")
    return dp, sp


def build_mesh(sp: int = 1, dp: Optional[int] = None, device_type: Optional[str] = None) -> DeviceMesh:
    """A 2-D DeviceMesh of shape (dp, sp) named ("dp", "sp") over the whole world.

    Ranks are laid out row-major: the sp ranks of one sequence are neighbours (rank = d * sp + s),
    so on GPUs a sequence-parallel group stays inside a node while sp <= GPUs per node.
    """
    if not dist.is_initialized():
        raise RuntimeError("build_mesh needs torch.distributed initialised (see init_distributed / torchrun).")
    dp, sp = check_parallel_sizes(dist.get_world_size(), sp, dp)
    # the process group's backend says where its tensors live (gloo: CPU, even on a GPU machine)
    device_type = device_type or ("cuda" if dist.get_backend() == "nccl" else "cpu")
    return init_device_mesh(device_type, (dp, sp), mesh_dim_names=("dp", "sp"))


def _sizes(mesh: Optional[DeviceMesh]) -> Tuple[int, int, int, int]:
    """(dp, sp, dp_rank, sp_rank); a single process without a mesh is (1, 1, 0, 0)."""
    if mesh is None:
        return 1, 1, 0, 0
    return mesh.size(0), mesh.size(1), mesh.get_local_rank("dp"), mesh.get_local_rank("sp")


def parallelize_tnl(model: nn.Module, mesh: Optional[DeviceMesh], data_parallel: str = "ddp") -> nn.Module:
    """Wire TNL's attention layers to the mesh's "sp" group and wrap the model for data parallel.

    data_parallel:
        "ddp":  DistributedDataParallel over all dp x sp ranks (the sp ranks are replicas too; their
                gradients, from different pieces of the same sequences, add up in the average).
        "fsdp": FSDP2 ``fully_shard`` of every block and then the root, sharded over all dp x sp ranks.
        "none": no wrapper; only for a single process (several processes would drift apart).
    Returns the model to train (the DDP wrapper, or the same module for FSDP2 / none).
    """
    if data_parallel not in DATA_PARALLEL:
        raise ValueError(f"data_parallel must be one of {DATA_PARALLEL}, got {data_parallel!r}.")
    world = dist.get_world_size() if dist.is_initialized() else 1
    if data_parallel == "none":
        if world > 1:
            raise ValueError(f"data_parallel='none' runs on one process, but there are {world}; choose 'ddp' or "
                             "'fsdp' (they also keep the sequence-parallel ranks' gradients in sync).")
        return model
    if mesh is None:
        raise ValueError(f"data_parallel={data_parallel!r} needs a DeviceMesh (build_mesh).")
    dp, sp, _, _ = _sizes(mesh)
    if dp * sp != world:
        raise ValueError(f"the mesh ({dp} x {sp}) must cover all {world} processes.")
    if sp > 1:
        model.set_sequence_parallel(mesh.get_group("sp"))
    if data_parallel == "ddp":
        device_ids = [torch.cuda.current_device()] if mesh.device_type == "cuda" else None
        # TNL's only buffers are the constant decay slopes: no per-step buffer broadcast
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    from torch.distributed.fsdp import fully_shard
    world_mesh = DeviceMesh.from_group(dist.group.WORLD, mesh.device_type)
    for block in model.blocks:
        fully_shard(block, mesh=world_mesh)
    fully_shard(model, mesh=world_mesh)
    return model


def shard_sequence(x: Tensor, mesh: Optional[DeviceMesh], dim: int = 1) -> Tensor:
    """This rank's contiguous piece of ``x`` along ``dim`` (the sequence), split over the "sp" ranks.

    Raises ValueError when the length is not divisible by the sp size (the same on every rank,
    so all ranks raise before any collective).
    """
    _, sp, _, s = _sizes(mesh)
    T = x.shape[dim]
    if T % sp:
        raise ValueError(f"sequence parallel splits the sequence into sp={sp} equal pieces, but its length {T} "
                         f"is not divisible by {sp}; pad or crop it to a multiple of {sp}.")
    return x.narrow(dim, s * (T // sp), T // sp)


class ShardedBatch(NamedTuple):
    """This rank's share of a global batch: inputs and targets ``[B/dp, T/sp]``, the LRPE offset of
    its first token, and the GLOBAL cu_seqlens (packed batches) for the attention."""

    input_ids: Tensor
    labels: Optional[Tensor]
    position_offset: int
    cu_seqlens: Optional[Tensor]


def shard_batch(input_ids: Tensor, labels: Optional[Tensor], mesh: Optional[DeviceMesh],
                cu_seqlens: Optional[Tensor] = None, split_rows: bool = True) -> ShardedBatch:
    """Split a batch ``[B, T]`` into this rank's rows and piece of the sequence.

    split_rows=True: the batch is the GLOBAL one (the same on every rank) and its rows go to the
    "dp" ranks (B divisible by dp); False: the batch already is this dp rank's rows. Each row's
    sequence goes to the "sp" ranks (T divisible by sp). labels are the already-shifted targets
    (``labels[b, t]`` follows ``input_ids[b, t]``), so a piece's targets are local. A packed batch
    (cu_seqlens, B == 1) is split along the sequence only: give each dp rank its own packed row.
    """
    dp, sp, d, _ = _sizes(mesh)
    if not split_rows:
        dp, d = 1, 0
    B, T = input_ids.shape
    if labels is not None and labels.shape != input_ids.shape:
        raise ValueError(f"labels must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(labels.shape)}.")
    if cu_seqlens is not None and dp > 1:
        raise ValueError("shard_batch: a packed batch (cu_seqlens, B == 1) cannot be split over dp > 1 ranks; "
                         "give each dp rank its own packed row and call shard_batch(..., split_rows=False).")
    if B % dp:
        raise ValueError(f"data parallel splits the batch into dp={dp} equal parts, but the global batch size {B} "
                         f"is not divisible by {dp}.")
    rows = slice(d * (B // dp), (d + 1) * (B // dp))
    ids = shard_sequence(input_ids[rows], mesh)
    lab = shard_sequence(labels[rows], mesh) if labels is not None else None
    _, _, _, s = _sizes(mesh)
    return ShardedBatch(ids, lab, s * (T // sp), cu_seqlens)


def lm_loss(logits: Tensor, labels: Tensor, mesh: Optional[DeviceMesh] = None,
            ignore_index: int = -100) -> Tuple[Tensor, Tensor]:
    """Cross-entropy over the global batch: sum of token losses / global count of targets.

    Returns ``(loss, loss_value)``: call ``loss.backward()`` on every rank (it is this rank's token-loss
    sum scaled by world / global count, so DDP's / FSDP's average over all ranks gives the exact
    gradient of the global mean); ``loss_value`` is the global mean itself (detached, same on every
    rank), for logging. One all-reduce of two numbers.
    """
    local_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                ignore_index=ignore_index, reduction="sum")
    count = (labels != ignore_index).sum()
    if mesh is None or not dist.is_initialized() or dist.get_world_size() == 1:
        n = count.clamp(min=1).to(local_sum.dtype)
        return local_sum / n, (local_sum / n).detach()
    world = dist.get_world_size()
    stats = torch.stack([local_sum.detach(), count.to(local_sum.dtype)])
    dist.all_reduce(stats)
    n = stats[1].clamp(min=1)
    return local_sum * (world / n), (stats[0] / n)


class ParallelContext:
    """Everything a training script needs about its place in the dp x sp layout, in one object.

    Built by ``setup_parallel``; on a single process every method is the plain single-process
    operation, so one script serves both::

        par = setup_parallel(data_parallel="fsdp", sp=2)          # under torchrun
        train_model = par.wrap(model)
        loss, loss_value = par.forward_loss(train_model, x, y)   # x, y: this dp rank's rows [B, T]
        loss.backward()
    """

    def __init__(self, mesh: Optional[DeviceMesh], data_parallel: str, device: torch.device):
        self.mesh, self.data_parallel, self.device = mesh, data_parallel, device
        self.dp, self.sp, self.dp_rank, self.sp_rank = _sizes(mesh)
        self.rank = dist.get_rank() if mesh is not None else 0
        self.world = self.dp * self.sp

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, evaluates into files and saves."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``parallelize_tnl`` on this layout (identity on a single process)."""
        if self.mesh is None:
            return model
        return parallelize_tnl(model, self.mesh, self.data_parallel)

    def forward_loss(self, model: nn.Module, input_ids: Tensor, labels: Tensor,
                     ignore_index: int = -100) -> Tuple[Tensor, Tensor]:
        """Forward this dp rank's rows ``[B, T]`` (sequence split over sp here) and the global-mean loss.

        Returns ``(loss to backward, global mean loss detached)``; see ``lm_loss``.
        """
        if self.mesh is None:
            loss = model(input_ids, labels=labels, return_logits=False).loss
            return loss, loss.detach()
        batch = shard_batch(input_ids, labels, self.mesh, split_rows=False)
        out = model(batch.input_ids, position_offset=batch.position_offset)
        return lm_loss(out.logits, batch.labels, self.mesh, ignore_index)

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any (e.g. a wall-clock stop), so all ranks stop together."""
        if self.mesh is None:
            return bool(flag)
        t = torch.tensor([int(bool(flag))], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def from_main(self, value: int) -> int:
        """Rank 0's value of an int on every rank (e.g. a schedule length fitted from timings)."""
        if self.mesh is None:
            return int(value)
        t = torch.tensor([int(value)], device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def barrier(self) -> None:
        if self.mesh is not None:
            dist.barrier()

    def close(self) -> None:
        if self.mesh is not None and dist.is_initialized():
            dist.destroy_process_group()


def setup_parallel(data_parallel: str = "none", sp: int = 1, backend: Optional[str] = None,
                   timeout_s: float = 600.0) -> ParallelContext:
    """Initialise torch.distributed from torchrun's environment and build the (dp, sp) mesh.

    Without torchrun (one process) it returns a single-process context; then ``data_parallel``
    must be "none" and ``sp`` 1. Bad combinations raise ValueError on every rank before any
    collective (sizes are known everywhere from the environment).
    """
    if data_parallel not in DATA_PARALLEL:
        raise ValueError(f"data_parallel must be one of {DATA_PARALLEL}, got {data_parallel!r}.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and sp != 1:
        raise ValueError(f"sp={sp} needs a multiple of {sp} processes; launch with torchrun --nproc_per_node {sp} "
                         "(and --dp ddp or fsdp).")
    check_parallel_sizes(world, sp)
    if world == 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
            else torch.device("cpu")
        return ParallelContext(None, "none", device)
    if data_parallel == "none":
        raise ValueError(f"--dp none runs on one process, but torchrun started {world}; choose ddp or fsdp "
                         "(they also keep the sequence-parallel ranks' gradients in sync).")
    _, _, device = init_distributed(backend, timeout_s)
    return ParallelContext(build_mesh(sp=sp, device_type=device.type), data_parallel, device)
