"""Export contracts as data: one :class:`GraphSpec` per exported graph (docs/maths.md section 7).

A spec fixes everything a consumer of the graph relies on: input and output names, dtypes and shapes (a string marks
a dynamic axis), the batch (static, or a ``(min, opt, max)`` range for dynamic graphs, which also becomes the
TensorRT optimisation profile) and the ONNX opset. Its :meth:`GraphSpec.digest` is part of the artifact cache key.

The graphs (``x``, ``v``: (B, C, H, W) float32, ``t``: (B,) int64 timesteps):

| graph         | inputs         | outputs                    | batch                                   |
|---------------|----------------|----------------------------|-----------------------------------------|
| ``h``         | x, t           | h (B, C_h, H_h, W_h)       | dynamic                                 |
| ``h_jvp``     | x, t, v        | h, jh = D h[v]             | static: one file per batch size         |
| ``eps``       | x, t           | eps (B, C, H, W)           | dynamic                                 |
| ``eps_jvp``   | x, t, v        | eps, jeps = D eps[v]       | static: one file per batch size         |
| ``h_jvp_point``| x (1,..), t (1,), v (K,..) | h (1,..), jh (K,..) | static K: many tangents at ONE point    |

``h_jvp_point`` is the linearize-style graph for rate maps: the primal h(x) is computed once and only the tangent
computation is batched over the K directions (traced from ``torch.func.vmap`` over the tangents of ``func.jvp``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from pipeline.errors import InputError
from pipeline.validate import is_int

#: Every graph the exporter knows, in export order.
GRAPHS: tuple[str, ...] = ("h", "h_jvp", "eps", "eps_jvp", "h_jvp_point")
#: Graphs exported by default (``h_jvp_point`` is opt-in: ``--graphs ... h_jvp_point``).
DEFAULT_GRAPHS: tuple[str, ...] = ("h", "h_jvp", "eps", "eps_jvp")
#: Graphs with a static batch (traced with make_fx: one file per batch size).
STATIC_GRAPHS: frozenset[str] = frozenset({"h_jvp", "eps_jvp", "h_jvp_point"})
#: Accepted precisions. ``precision`` applies to TensorRT engines; the ONNX graphs themselves are always float32.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

OPSET = 20  # the dynamo exporter's native opset in torch 2.13
MAX_DYNAMIC_BATCH = 64  # upper end of the dynamic batch range (and of the TensorRT profile)
OPT_DYNAMIC_BATCH = 8  # the dynamic graphs' optimum (TensorRT profile); fixed, so it does not change their cache keys


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` entries are ints, or a string naming a dynamic axis (e.g. ``"B"``)."""

    name: str
    dtype: str  # "float32" | "int64"
    shape: tuple[int | str, ...]

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with every dynamic axis set to ``batch``."""
        return tuple(batch if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """The export contract of one graph file."""

    graph: str  # one of GRAPHS
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: int | None  # static batch (K for h_jvp_point), or None for a dynamic batch
    batch_range: tuple[int, int, int] | None  # (min, opt, max) of the dynamic batch; None when static
    opset: int = OPSET

    @property
    def name(self) -> str:
        """File stem and manifest key: ``h``, ``eps`` (dynamic) or ``h_jvp_b8`` (static)."""
        return self.graph if self.batch is None else f"{self.graph}_b{self.batch}"

    @property
    def is_jvp(self) -> bool:
        return self.graph in STATIC_GRAPHS

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor name: {axis: axis name}}`` for every dynamic axis (empty for static graphs)."""
        out: dict[str, dict[int, str]] = {}
        for s in self.inputs + self.outputs:
            axes = {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
            if axes:
                out[s.name] = axes
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GraphSpec:
        def ts(items):
            return tuple(TensorSpec(i["name"], i["dtype"], tuple(i["shape"])) for i in items)

        br = d.get("batch_range")
        return cls(graph=d["graph"], inputs=ts(d["inputs"]), outputs=ts(d["outputs"]), batch=d["batch"],
                   batch_range=None if br is None else tuple(br), opset=d.get("opset", OPSET))

    def digest(self) -> str:
        """sha256 of the canonical JSON of this spec."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def check_graphs(graphs) -> tuple[str, ...]:
    """Validate a list of graph names; returns them as a tuple in canonical order, without duplicates."""
    if isinstance(graphs, str):
        graphs = (graphs,)
    graphs = tuple(graphs)
    bad = [g for g in graphs if g not in GRAPHS]
    if bad or not graphs:
        raise InputError(f"graphs must be a non-empty subset of {GRAPHS}; got {graphs!r}")
    return tuple(g for g in GRAPHS if g in graphs)


def check_batch_sizes(batch_sizes) -> tuple[int, ...]:
    """Validate batch sizes (positive ints); returns them sorted, without duplicates."""
    if is_int(batch_sizes):
        batch_sizes = (batch_sizes,)
    sizes = tuple(batch_sizes)
    if not sizes or any(not is_int(b) or not 1 <= b <= MAX_DYNAMIC_BATCH for b in sizes):
        raise InputError(f"batch_sizes must be a non-empty list of integers in [1, {MAX_DYNAMIC_BATCH}]; got {sizes!r}")
    return tuple(sorted(set(sizes)))


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def graph_spec(
    graph: str,
    *,
    channels: int,
    size: tuple[int, int],
    h_shape: tuple[int, int, int],
    batch: int | None = None,
    opt_batch: int = OPT_DYNAMIC_BATCH,
) -> GraphSpec:
    """The spec of one graph for a model-space shape ``(channels, *size)`` with h-space shape ``h_shape``.

    ``batch`` is required for static graphs (``h_jvp``, ``eps_jvp``: the batch; ``h_jvp_point``: the number of
    tangents K) and must be None for the dynamic ``h`` and ``eps``; ``opt_batch`` is the dynamic graphs' optimum.
    """
    check_graphs((graph,))
    H, W = size
    if graph in STATIC_GRAPHS:
        if batch is None:
            raise InputError(f"graph {graph!r} has a static batch: pass batch=")
        check_batch_sizes((batch,))
        B: int | str = batch
        batch_range = None
    else:
        if batch is not None:
            raise InputError(f"graph {graph!r} has a dynamic batch: batch must be None")
        B, batch_range = "B", (1, max(1, min(opt_batch, MAX_DYNAMIC_BATCH)), MAX_DYNAMIC_BATCH)
    x_shape = (B, channels, H, W)
    x = TensorSpec("x", "float32", x_shape)
    t = TensorSpec("t", "int64", (B,))
    v = TensorSpec("v", "float32", x_shape)
    hs = TensorSpec("h", "float32", (B, *h_shape))
    if graph == "h":
        return GraphSpec(graph, (x, t), (hs,), None, batch_range)
    if graph == "eps":
        return GraphSpec(graph, (x, t), (TensorSpec("eps", "float32", x_shape),), None, batch_range)
    if graph == "h_jvp":
        return GraphSpec(graph, (x, t, v), (hs, TensorSpec("jh", "float32", hs.shape)), batch, None)
    if graph == "eps_jvp":
        return GraphSpec(graph, (x, t, v), (TensorSpec("eps", "float32", x_shape),
                                            TensorSpec("jeps", "float32", x_shape)), batch, None)
    # h_jvp_point: one point, K tangents
    one = (1, channels, H, W)
    return GraphSpec(
        graph,
        (TensorSpec("x", "float32", one), TensorSpec("t", "int64", (1,)), TensorSpec("v", "float32", x_shape)),
        (TensorSpec("h", "float32", (1, *h_shape)), TensorSpec("jh", "float32", (batch, *h_shape))),
        batch,
        None,
    )
