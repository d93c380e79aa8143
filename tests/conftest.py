import pytest
import torch

from lightning_attn.graphs import capture_graph

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _poison_uninitialized_memory():
    """Every uninitialised allocation (at::empty in the kernels too) starts as NaN,
    so an output element a kernel forgets to write fails the comparison."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(prev)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is several times faster than two fighting over a busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def replay_equals_eager(fn, state):
    """fn(state) -> output, updating state in place. Runs it eagerly on one copy of state and as a
    CUDA graph, captured on another copy (reset to state after the capture) and replayed; True when
    outputs and updated states agree bit for bit."""
    eager_state = state.clone()
    eager = fn(eager_state)
    graph_state = state.clone()
    g, out = capture_graph(lambda: fn(graph_state), warmup=1)
    graph_state.copy_(state)  # undoes the warm-up
    g.replay()
    torch.cuda.synchronize()
    return torch.equal(out, eager) and torch.equal(graph_state, eager_state)
