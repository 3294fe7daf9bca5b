"""Device graph capture (CUDA graphs, Ascend NPU graphs) behind one small interface.

A stage that wants to replay a fixed sequence of kernels asks the backend for a
:class:`GraphRunner` (``ctx.backend.graph_runner()``); ``None`` means "run it eagerly"
(the CPU, or an accelerator whose torch build has no graph API). The runner follows
PyTorch's documented recipe: warm up on a side stream (lazy initialisation, cuBLAS
workspaces and autotuning must not happen during capture), capture, then replay. Each
graph has a private memory pool (see :meth:`GraphRunner.capture` for why).

A captured graph holds the addresses of every tensor it read: the caller re-captures
when the module's tensors or Python control flow change (e.g. a peft adapter switch).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


class GraphRunner:
    """Capture ``fn`` once, replay it many times. ``device_module`` is ``torch.cuda`` or
    ``torch.npu``; ``graph_cls`` its graph class (``CUDAGraph`` / ``NPUGraph``)."""

    def __init__(self, device_module: Any, graph_cls: type, warmup: int = 2, training: bool = False):
        self.mod = device_module
        self.graph_cls = graph_cls
        self.warmup = warmup
        self.training = training  # the backend vouches for make_graphed_callables (a training step's graphs)

    def capture(self, fn: Callable[[], T]) -> Callable[[], T]:
        """Warm ``fn`` up on a side stream, capture it; return ``replay() -> fn's outputs``.

        ``fn`` runs ``warmup`` times for real, so it must be idempotent for its inputs
        (a decode step that writes the same cache slot again is)."""
        mod = self.mod
        side = mod.Stream()
        side.wait_stream(mod.current_stream())
        with mod.stream(side):
            for _ in range(self.warmup):
                fn()
        mod.current_stream().wait_stream(side)
        graph = self.graph_cls()
        # Each graph gets a private pool of its own (pool=None). Sharing one pool id
        # across captures breaks once the graphs captured into it are gone (a decode loop
        # drops its graphs with its buffers when the batch shape changes): the allocator
        # keeps an id only while a graph of it lives, and a capture into a dead id fails
        # an internal assert (CUDACachingAllocator ``use_count > 0``), as engine rounds
        # on the H100 showed. A pool holds one step's temporaries (about 100 MB at B=256
        # on the 1.5B shape), and a decode loop has a handful of graphs.
        with mod.graph(graph):
            out = fn()

        def replay() -> T:  # holds the graph: it lives as long as the caller keeps this
            graph.replay()
            return out

        return replay


    @property
    def make_graphed_callables(self) -> Callable[..., Any] | None:
        """The device module's ``make_graphed_callables`` (a callable's forward and backward
        captured as two graphs, for training; PyTorch's signature), or None where this torch
        build has none or the backend has not verified it (``training``)."""
        return getattr(self.mod, "make_graphed_callables", None) if self.training else None


def runner_factory(module_name: str, graph_attr: str, training: bool = False) -> Callable[[], GraphRunner | None]:
    """A ``Backend.graph_runner`` for ``torch.<module_name>`` with graph class ``graph_attr``;
    the factory returns None where this torch build lacks the graph API. ``training``: the
    runner offers ``make_graphed_callables`` (trainers capture their layers' backward too)."""

    def make() -> GraphRunner | None:
        import torch

        mod = getattr(torch, module_name, None)
        graph_cls = getattr(mod, graph_attr, None) if mod is not None else None
        if graph_cls is None or not hasattr(mod, "graph"):
            return None
        return GraphRunner(mod, graph_cls, training=training)

    return make


def no_graphs() -> None:
    return None
