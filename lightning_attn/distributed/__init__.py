"""Scale-out on torch.distributed: LASP-2 sequence parallelism and dp x sp set-up helpers.

    sequence_parallel_attn   lightning attention over a sequence split across a process group
    setup_parallel           torchrun environment -> ParallelContext (mesh, wrap, forward_loss)
    build_mesh, parallelize_tnl, shard_batch, shard_sequence, lm_loss: the pieces it is made of

See docs/distributed.md for the torchrun commands and benchmarks/COMM_VOLUME.md for the traffic.
"""
from .parallel import (ParallelContext, ShardedBatch, build_mesh, check_parallel_sizes, init_distributed, lm_loss,
                       parallelize_tnl, setup_parallel, shard_batch, shard_sequence)
from .sequence_parallel import sequence_parallel_attn

__all__ = ["sequence_parallel_attn", "setup_parallel", "ParallelContext", "build_mesh", "check_parallel_sizes",
           "init_distributed", "parallelize_tnl", "shard_batch", "shard_sequence", "ShardedBatch", "lm_loss"]
