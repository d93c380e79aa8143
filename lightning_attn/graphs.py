"""CUDA-graph capture and replay timing, shared by the decode steps, the tests and the benchmarks."""
import statistics
from typing import Any, Callable, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["capture_graph", "replay_ms", "compiled", "FixedBufferStep"]


def capture_graph(fn: Callable[[], Any], warmup: int = 3) -> Tuple["torch.cuda.CUDAGraph", Any]:
    """Runs ``fn`` ``warmup`` times on a side stream, then captures one call as a CUDA graph.

    The warm-up sets up what a capture may not (torch.compile's compilation, kernel attributes,
    cuBLAS workspaces, the allocator's pool). Returns the graph and the captured call's output,
    whose tensors each replay rewrites. The capture records without running: state that ``fn``
    updates in place has advanced by the warm-up calls only.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def replay_ms(graph: "torch.cuda.CUDAGraph", reps: int, rounds: int = 1, warm: int = 0) -> float:
    """GPU time per replay in ms: ``warm`` untimed replays, then the median over ``rounds`` of
    ``reps`` back-to-back replays between two CUDA events."""
    for _ in range(warm):
        graph.replay()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def compiled(fn: Callable, compile: Union[bool, str]) -> Callable:
    """``fn`` through torch.compile (static shapes) when ``compile`` is True or a mode name, else ``fn``."""
    if not compile:
        return fn
    return torch.compile(fn, dynamic=False, mode=compile if isinstance(compile, str) else None)


class FixedBufferStep:
    """A one-token decode step on fixed buffers: ``step(tok)`` copies ``tok`` into ``self.tok``
    and runs ``_run()`` (a subclass's: the logits ``[N, V]``), or replays the graph that
    ``capture`` recorded (its output buffer, valid until the next call)."""

    graph = None

    def _run(self) -> Tensor:
        raise NotImplementedError

    def capture(self, moved: Sequence[Tensor]) -> None:
        """Captures ``_run``; its warm-up runs change the tensors ``moved`` (states, positions),
        which are saved before and restored after."""
        saved = [t.clone() for t in moved]
        self.graph, self.logits = capture_graph(self._run)
        for t, t0 in zip(moved, saved):
            t.copy_(t0)

    def __call__(self, tok: Tensor) -> Tensor:
        self.tok.copy_(tok)
        if self.graph is None:
            return self._run()
        self.graph.replay()
        return self.logits
