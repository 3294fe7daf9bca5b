"""Decoder layers replayed as captured device graphs while a LoRA trains (forward and backward).

Why: a LoRA SFT step on the 1.5B shape launches ~5,600 kernels, most of them small (each LoRA
layer's dropout, two thin GEMMs and add, the norms, rotary, residuals, and all of it again in
backward). The host launching them one at a time through peft's, transformers' and autograd's
Python left an H100/H200 idle for most of the step (docs/benchmarks.md, issue 19 part 2).
PyTorch's ``make_graphed_callables`` captures a callable's forward and backward once and
replays each as one launch; this module hands it the model's decoder layers.

Which calls replay (:meth:`_LayerGraphs.key`): training mode with gradients on; hidden states,
mask and rotary tables of the shapes and dtypes captured (the first batch seen: a packed
trainer pads its rows to ``max_length``, so every full batch has that shape); the mask a
tensor or None as captured (position ids too: they are graph inputs, copied in each call); no
KV cache and no extra keyword arguments (flash attention's per-batch sequence lengths would be
baked in); the model's attention sdpa or eager (no
per-batch Python in the attention); the LoRA layers' state (active adapters, disabled, merged)
as at capture. Any other call runs the layer's own forward: an epoch's last, smaller batch,
DPO's reference pass (no gradients, another adapter), evaluation.

What a replay cannot see (so the captures are made only where it holds): hooks on the layers
themselves (none allowed; those inside a layer run once, at capture), gradient
checkpointing (the layers' ``__call__`` recomputes: off), several processes (DDP's reducer
hooks into the backward: one process only). Parameters are read by address, so the optimizer's
in-place updates are seen; the LoRA weights' gradients come out of the backward graph's static
buffers, so each is cloned before autograd accumulates it (a second micro-batch's replay
would otherwise overwrite a gradient ``.grad`` still aliases).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from typing import Any, Callable, Iterator, Sequence

log = logging.getLogger(__name__)

GRAPHABLE_ATTENTION = ("sdpa", "eager")
# The keyword arguments of a plain training call (besides the hidden states, mask, rotary tables
# and position ids, which the graphs take as inputs) and the values they may have there; any
# other keyword argument, or another value, runs the layer's own forward.
_PLAIN_KWARGS: dict[str, tuple[Any, ...]] = {
    "past_key_values": (None,), "use_cache": (None, False), "cache_position": (None,),
    "output_attentions": (None, False), "output_hidden_states": (None, False),
}


def _plain_call(kwargs: dict[str, Any]) -> bool:
    return all(name == "position_ids" or (name in _PLAIN_KWARGS and any(value is v for v in _PLAIN_KWARGS[name]))
               for name, value in kwargs.items())


def decoder_layers(model: Any) -> list[Any]:
    """The model's decoder layers (``model.model.layers`` under any wrappers), or []."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for _ in range(4):  # CausalLM -> Model -> layers; bounded: wrappers never nest deeper
        layers = getattr(inner, "layers", None)
        if layers is not None:
            return list(layers)
        inner = getattr(inner, "model", None)
        if inner is None:
            return []
    return []


def _adapter_state(lora_layers: Sequence[Any]) -> tuple[Any, ...]:
    """What a captured LoRA layer's kernels depend on beyond its tensors' addresses."""
    return tuple(
        (bool(getattr(m, "disable_adapters", False)), tuple(getattr(m, "active_adapters", ()) or ()),
         bool(getattr(m, "merged", False)), m.__dict__.get("forward"))
        for m in lora_layers
    )


class _LayerGraphs:
    """The layers' forwards while the context is open: replay where :meth:`key` matches the
    capture, the layer's own forward otherwise."""

    def __init__(self, model: Any, layers: Sequence[Any], make_graphed: Callable[..., Any], device_type: str):
        self.model = model
        self.layers = list(layers)
        self.make_graphed = make_graphed
        self.device_type = device_type
        self.own = [layer.forward for layer in self.layers]  # bound, or a patch already there
        self.params = [tuple(p for p in layer.parameters() if p.requires_grad) for layer in self.layers]
        self.lora_layers = [m for layer in self.layers for m in layer.modules() if hasattr(m, "lora_A")]
        self.captured_key: tuple[Any, ...] | None = None
        self.inputs: list[tuple[Any, ...]] = []  # each layer's captured hidden-states signature
        self.graphed: list[Callable[..., Any]] | None = None
        self.failed = False
        self.replaying = False  # the current forward pass replays (decided at layer 0)
        self.pass_tensors: tuple[Any, ...] = ()  # layer 0's mask, position ids and rotary tables in this pass
        self.report: dict[str, Any] = {"graphed": True, "captures": 0, "replays": 0, "own_calls": 0,
                                       "capture_error": ""}

    def key(self, hidden: Any, mask: Any, rotary: Any, positions: Any,
            kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        """The graph key of a call at layer 0, or None when the pass must run eagerly."""
        import torch

        if not (torch.is_grad_enabled() and self.model.training and isinstance(hidden, torch.Tensor)):
            return None
        if getattr(self.model.config, "_attn_implementation", None) not in GRAPHABLE_ATTENTION:
            return None
        if not _plain_call(kwargs):
            return None
        if mask is not None and not isinstance(mask, torch.Tensor):
            return None  # a BlockMask (flex attention) or a per-layer-type mapping
        if positions is not None and not isinstance(positions, torch.Tensor):
            return None
        if not (isinstance(rotary, tuple) and len(rotary) == 2 and all(isinstance(t, torch.Tensor) for t in rotary)):
            return None
        return (_sig(hidden), _sig(mask), _sig(rotary[0]), _sig(rotary[1]), _sig(positions),
                torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type),
                _adapter_state(self.lora_layers))

    def forward_of(self, i: int) -> Callable[..., Any]:
        own = self.own[i]

        def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            mask = kwargs.pop("attention_mask", None)
            rotary = kwargs.pop("position_embeddings", None)
            positions = kwargs.get("position_ids")  # stays in kwargs for the layer's own forward
            if i == 0:
                key = None if args else self.key(hidden_states, mask, rotary, positions, kwargs)
                if key is not None and self.graphed is None and not self.failed:
                    self._capture(hidden_states, mask, positions, rotary)
                    self.captured_key = key if self.graphed is not None else None
                self.replaying = key is not None and key == self.captured_key
                self.pass_tensors = (mask, positions, *(rotary or (None, None)))
            # the layers share one static buffer per shared input, which the backward graphs may
            # read too: every layer must get layer 0's tensors (a sliding-window layer's mask differs)
            replay = (self.replaying and not args and _sig(hidden_states) == self.inputs[i] and rotary is not None
                      and all(a is b for a, b in zip((mask, positions, *rotary), self.pass_tensors)))
            if replay:
                self.report["replays"] += 1
                shared = (t for t in self.pass_tensors if t is not None)
                return self.graphed[i](hidden_states, *shared, *self.params[i])
            self.replaying = False  # a layer in between changed what flows: eager from here
            self.report["own_calls"] += 1
            return own(hidden_states, *args, attention_mask=mask, position_embeddings=rotary, **kwargs)

        return forward

    def _callable(self, i: int, has_mask: bool, has_positions: bool) -> Callable[..., Any]:
        own = self.own[i]

        def layer_call(hidden: Any, *rest: Any) -> Any:
            # rest: the mask and position ids (where given), the rotary tables, then the layer's
            # trainable parameters, passed so that the backward graph computes their gradients
            it = iter(rest)
            mask = next(it) if has_mask else None
            positions = next(it) if has_positions else None
            return own(hidden, attention_mask=mask, position_ids=positions, position_embeddings=(next(it), next(it)))

        return layer_call

    def _capture(self, hidden: Any, mask: Any, positions: Any, rotary: Any) -> None:
        import torch

        shared = tuple(t.detach().clone() for t in (mask, positions, *rotary) if t is not None)
        needs_grad = hidden.requires_grad
        samples, inputs = [], []
        for params in self.params:
            h = hidden.detach().clone().requires_grad_(needs_grad)
            samples.append((h, *shared, *params))
            inputs.append(_sig(h))
            needs_grad = needs_grad or bool(params)  # the next layer's input carries this one's LoRA
        callables = tuple(self._callable(i, mask is not None, positions is not None) for i in range(len(self.layers)))
        try:
            # make_graphed_callables refuses autocast's weight-cast cache (a cached cast would
            # be captured once and go stale): the trainer's autocast, without the cache
            autocast = torch.is_autocast_enabled(self.device_type)
            with torch.autocast(self.device_type, dtype=torch.get_autocast_dtype(self.device_type), enabled=autocast,
                                cache_enabled=False):
                graphed = self.make_graphed(callables, tuple(samples), num_warmup_iters=2, allow_unused_input=True)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any capture failure leaves the eager layers, loudly
            self.failed = True
            self.report["capture_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("trainer: capturing the decoder layers as device graphs failed (%s: %s); "
                        "training with the eager layers", type(exc).__name__, exc)
            return
        self.graphed, self.inputs = list(graphed), inputs
        self.report["captures"] += 1


def _sig(t: Any) -> Any:
    return None if t is None else (tuple(t.shape), t.dtype, t.device, t.requires_grad)


def _clone_grad(grad: Any) -> Any:
    return grad.clone()


@contextlib.contextmanager
def graphed_decoder_layers(model: Any, make_graphed: Callable[..., Any] | None, device_type: str,
                           enabled: bool = True) -> Iterator[dict[str, Any]]:
    """While open, the model's decoder layers replay captured graphs where they can (module
    docstring); on exit their own forwards are back and the graphs (and their memory) dropped.

    ``make_graphed``: the backend's
    :attr:`~srscode.hardware.graphs.GraphRunner.make_graphed_callables` (PyTorch's); None or
    ``enabled=False`` leaves the layers alone. Yields a live report: ``graphed`` (whether the
    layers were wrapped), ``captures``, ``replays`` and ``own_calls`` (layer calls, summed over
    layers) and ``capture_error``."""
    layers = decoder_layers(model) if enabled and make_graphed is not None else []
    hooked = any(layer._forward_hooks or layer._forward_pre_hooks or getattr(layer, "gradient_checkpointing", False)
                 for layer in layers)
    if not layers or hooked:
        yield {"graphed": False, "captures": 0, "replays": 0, "own_calls": 0, "capture_error": ""}
        return
    graphs = _LayerGraphs(model, layers, make_graphed, device_type)
    patched_before = ["forward" in layer.__dict__ for layer in layers]
    handles = [p.register_hook(_clone_grad) for params in graphs.params for p in params]
    try:
        for i, layer in enumerate(layers):
            layer.forward = graphs.forward_of(i)
        with warnings.catch_warnings():
            # The LoRA weights' AccumulateGrad nodes are first made by the capture's warm-up,
            # which torch runs on a side stream, and the captured outputs keep them: every
            # backward then warns that their stream differs from the producer's (torch syncs
            # the two, an event wait each). Expected with make_graphed_callables: not shown.
            warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
            yield graphs.report
    finally:
        for layer, own, patched in zip(layers, graphs.own, patched_before):
            if patched:
                layer.forward = own
            else:
                layer.__dict__.pop("forward", None)
        for h in handles:
            h.remove()
        graphs.graphed = None
        # torch's graphed callables are autograd Function classes made per capture, and a class
        # sits in a reference cycle: their graphs, pool and static buffers (GBs at 1.5B) would
        # wait for the cyclic collector while the round's next stage wants the memory
        gc.collect()
