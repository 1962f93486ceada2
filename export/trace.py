"""The functions behind each graph, and the traced-aten route that makes JVPs exportable.

A module that calls ``torch.func.jvp`` does not export directly with torch 2.13 (every torch.export and legacy route
fails; docs/maths.md section 7). What works, and what :func:`trace_static` does:

1. trace the JVP function into a plain aten graph with ``make_fx`` (real tensors, core aten decompositions; without
   the decompositions ONNX has no ``silu_backward``);
2. clean the graph (:func:`clean_graph`): forward AD leaves ``_efficientzerotensor`` tangents (replaced by zeros and
   folded away, :func:`fold_zeros`), dead ``is_same_size``/``_has_same_storage_numel`` shape checks and dead
   meta-device copies (removed), and the weights as plain tensor attributes (made buffers; otherwise the exporter
   finds a fake tensor among its constants);
3. export the cleaned graph with the dynamo exporter (needs onnxscript).

Symbolic tracing fails (an internal assert in ``VariableMethodStubs.cpp``), so traced graphs have a static batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from pipeline.protocols import point_jvp

from .specs import GraphSpec

aten = torch.ops.aten

GraphFn = Callable[..., tuple[torch.Tensor, ...]]


def graph_function(model, graph: str) -> GraphFn:
    """The eager PyTorch function a graph computes, inputs and outputs in spec order (the export source and the
    reference of the parity check).

    ``h``/``eps``: (x, t) -> (out,);  ``h_jvp``/``eps_jvp``: (x, t, v) -> (out, D out[v]) by ``torch.func.jvp``;
    ``h_jvp_point``: (x (1, C, H, W), t (1,), v (K, C, H, W)) -> (h (1, ...), D h(x)[v] (K, ...)).
    """
    if graph == "h":
        return lambda x, t: (model.h_raw(x, t),)
    if graph == "eps":
        return lambda x, t: (model.eps_raw(x, t),)
    if graph in ("h_jvp", "eps_jvp"):
        raw = model.h_raw if graph == "h_jvp" else model.eps_raw

        def jvp(x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.func.jvp(lambda xx: raw(xx, t), (x,), (v,))

        return jvp
    if graph == "h_jvp_point":  # the primal is not batched under vmap: h(x) once, the K tangents together
        return lambda x, t, v: point_jvp(lambda xx: model.h_raw(xx, t), x, v)
    raise ValueError(f"unknown graph {graph!r}")


def example_inputs(spec: GraphSpec, *, batch: int | None = None, num_timesteps: int = 1000,
                   device: str | torch.device = "cpu", generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Random inputs matching ``spec`` (dynamic axes set to ``batch``, default the spec's optimum):
    x, v ~ N(0, 1), t uniform in [0, num_timesteps)."""
    if batch is None:
        batch = spec.batch if spec.batch is not None else spec.batch_range[1]
    out = []
    for s in spec.inputs:
        shape = s.concrete(batch)
        if s.dtype == "int64":
            out.append(torch.randint(0, num_timesteps, shape, generator=generator).to(device))
        else:
            out.append(torch.randn(shape, generator=generator).to(device))
    return tuple(out)


class GraphModule(nn.Module):
    """``forward(x, t) -> tuple(outputs)`` around a graph function, owning the U-Net so that torch.export sees
    its weights as parameters (used for the dynamic-batch graphs)."""

    def __init__(self, model, graph: str):
        super().__init__()
        if graph not in ("h", "eps"):
            raise ValueError(f"GraphModule serves the dynamic graphs h and eps, not {graph!r}")
        self.unet = model.unet
        self._fn = graph_function(model, graph)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self._fn(x, t))


class TracedModule(nn.Module):
    """``forward(x, t, v) -> tuple(outputs)`` around a cleaned make_fx graph (used for the static-batch graphs)."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.gm(x, t, v))


# Ops whose result is zero when their first argument is zero (shape and layout changes, copies, reductions).
_ZERO_IF_FIRST = {
    aten._to_copy.default, aten.expand.default, aten.view.default, aten._unsafe_view.default, aten.reshape.default,
    aten.permute.default, aten.clone.default, aten.alias.default, aten.t.default, aten.transpose.int,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.slice.Tensor, aten.select.int, aten.neg.default,
    aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.div.Tensor, aten.div.Scalar, aten.mul.Scalar,
}
# Zero constants: forward AD's tangents of parameters are efficient zeros (made ``zeros`` by clean_graph) or, after
# the decompositions, ``full(shape, 0)``.
_ZERO_SOURCES = {aten.zeros.default, aten.zeros_like.default, aten.new_zeros.default}
_FULL = {aten.full.default, aten.full_like.default, aten.new_full.default}
# Ops whose result is zero when any tensor argument is zero.
_ZERO_IF_ANY = {aten.mul.Tensor, aten.mm.default, aten.bmm.default}


def _is_mutating(node: torch.fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return schema is not None and schema.is_mutable


def _zero_node(g: torch.fx.Graph, node: torch.fx.Node) -> torch.fx.Node | None:
    """A ``zeros`` node shaped like ``node``'s traced value (None when the value is unknown)."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    with g.inserting_before(node):
        z = g.call_function(aten.zeros.default, (list(val.shape),), {"dtype": val.dtype, "device": val.device})
    z.meta["val"] = val
    return z


def fold_zeros(gm: torch.fx.GraphModule) -> int:
    """Fold the zero tangents forward mode gives parameters (``dW = 0``) out of a traced JVP graph, in place.

    ``torch.func.jvp`` differentiates ``conv(x, W, b)`` as ``conv(dx, W) + conv(x, dW, db)`` with efficient-zero
    ``dW, db``; once traced, the second convolution is real work (a third of the JVP graph's convolutions, measured).
    Zeros are propagated through shape ops, products, convolutions and matmuls, and ``a + 0``, ``a - 0``, ``0 + a`` are
    replaced by ``a``. Nothing that feeds an in-place op is folded. Returns the number of nodes replaced.
    """
    g = gm.graph
    # values written in place (and everything viewing them) are not known constants
    mutated: set[torch.fx.Node] = set()
    for node in g.nodes:
        if node.op == "call_function" and _is_mutating(node):
            stack = [a for a in node.args if isinstance(a, torch.fx.Node)]
            while stack:
                n = stack.pop()
                if n in mutated:
                    continue
                mutated.add(n)
                stack += [a for a in n.all_input_nodes if n.target in _ZERO_IF_FIRST]
    zero: set[torch.fx.Node] = set()
    replaced = 0
    for node in list(g.nodes):
        if node.op != "call_function" or node in mutated:
            continue
        if node.target in _ZERO_SOURCES or (node.target in _FULL and node.args[1] == 0):
            zero.add(node)
            continue
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        t = node.target
        if t in _ZERO_IF_FIRST:
            is_zero = bool(args) and node.args[0] in zero
        elif t in _ZERO_IF_ANY:
            is_zero = any(a in zero for a in args)
        elif t is aten.convolution.default:  # (input, weight, bias, ...)
            bias = node.args[2]
            is_zero = (node.args[0] in zero or node.args[1] in zero) and (bias is None or bias in zero)
        elif t in (aten.add.Tensor, aten.sub.Tensor) and len(args) == 2 and any(a in zero for a in args):
            a, b = node.args[0], node.args[1]
            if a in zero and b in zero:
                is_zero = True
            else:
                keep = b if a in zero else a
                out, kept = node.meta.get("val"), keep.meta.get("val")
                same = (isinstance(out, torch.Tensor) and isinstance(kept, torch.Tensor)
                        and out.shape == kept.shape and out.dtype == kept.dtype)
                if same and node.kwargs.get("alpha", 1) == 1:
                    if t is aten.sub.Tensor and keep is b:  # 0 - b
                        with g.inserting_before(node):
                            neg = g.call_function(aten.neg.default, (b,))
                        neg.meta["val"] = node.meta["val"]
                        keep = neg
                    node.replace_all_uses_with(keep)
                    replaced += 1
                continue
        else:
            continue
        if is_zero:
            z = _zero_node(g, node)
            if z is not None:
                node.replace_all_uses_with(z)
                zero.add(z)
                replaced += 1
    g.eliminate_dead_code()
    return replaced


def _dim(node: torch.fx.Node, d) -> int | None:
    """``d`` (an int or a one-element list) as a non-negative axis of ``node``'s traced value (None if unknown)."""
    val = node.meta.get("val")
    if isinstance(d, (list, tuple)):
        if len(d) != 1:
            return None
        d = d[0]
    if not isinstance(val, torch.Tensor) or not isinstance(d, int) or val.dim() == 0:
        return None
    return d % val.dim()


def _call(node, *targets) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in targets


def fuse_softmax_jvp(gm: torch.fx.GraphModule) -> int:
    """Rewrite forward AD's softmax tangent to use the softmax it already has, in place; returns the count rewritten.

    PyTorch's forward-mode rule for ``p = softmax(x)`` is ``p * (dx - logsumexp_jvp(x, dx))``, and ``logsumexp_jvp``
    computes the exponentials again: ``sum(exp(x - max x) * dx) / sum(exp(x - max x))``. That quotient equals
    ``sum(p * dx)``. On an attention's (heads, L, L) scores this saves a max, a subtraction, an exponential and a
    product over the largest tensor of the graph (SD 1.5 at 64 x 64 latents: 8 x 4096 x 4096 floats, 512 MiB each).
    Only the exact pattern is rewritten (same input, same axis); anything else is left as traced.
    """
    g = gm.graph
    rewritten = 0
    for p in list(g.nodes):
        if not _call(p, aten._softmax.default) or p.args[2]:
            continue
        x, axis = p.args[0], _dim(p.args[0], p.args[1])
        if axis is None:
            continue
        for prod in list(p.users):
            if not _call(prod, aten.mul.Tensor):
                continue
            sub = prod.args[1] if prod.args[0] is p else prod.args[0]
            if not _call(sub, aten.sub.Tensor) or sub.kwargs.get("alpha", 1) != 1:
                continue
            dx, quot = sub.args
            if not _call(quot, aten.div.Tensor, aten.div_.Tensor):
                continue
            num, den = quot.args
            if not (_call(num, aten.sum.dim_IntList) and _call(den, aten.sum.dim_IntList)
                    and _dim(num.args[0], num.args[1]) == axis and _dim(den.args[0], den.args[1]) == axis
                    and num.args[2:] == (True,) and den.args[2:] == (True,) and len(num.users) == 1):
                continue
            e, m = den.args[0], num.args[0]
            if not (_call(e, aten.exp.default) and _call(m, aten.mul.Tensor) and set(m.args) == {e, dx}):
                continue
            shifted = e.args[0]
            if not _call(shifted, aten.sub.Tensor) or shifted.kwargs.get("alpha", 1) != 1:
                continue
            y, mx = shifted.args
            base = y.args[0] if _call(y, aten.alias.default) else y
            if base is not x or not (_call(mx, aten.amax.default) and mx.args[0] is y
                                     and _dim(y, mx.args[1]) == axis):
                continue
            with g.inserting_before(quot):
                pdx = g.call_function(aten.mul.Tensor, (p, dx))
                w = g.call_function(aten.sum.dim_IntList, (pdx, [axis], True))
            pdx.meta["val"], w.meta["val"] = m.meta.get("val"), quot.meta.get("val")
            quot.replace_all_uses_with(w)
            g.erase_node(quot)  # an in-place div_ is not dead code to DCE
            rewritten += 1
    if rewritten:
        g.eliminate_dead_code()
    return rewritten


def fuse_matmul_sums(gm: torch.fx.GraphModule) -> int:
    """Rewrite ``A @ B + C @ D`` as one ``[A, C] @ [B; D]`` where the product is larger than its factors, in place;
    returns the count rewritten.

    The tangent of a product is such a sum: an attention's score tangent ``dq k^T + q dk^T`` makes two (heads, L, L)
    products and adds them. As one product over the concatenated factors (2 x head width), it makes one, with the
    same multiply-adds and no separate addition: two fewer passes over the graph's largest tensors. Products whose
    output is smaller than their factors (``dp v + p dv``) are left alone, where concatenating would copy more than
    it saves.
    """
    g = gm.graph
    rewritten = 0
    for add in list(g.nodes):
        if not _call(add, aten.add.Tensor) or add.kwargs.get("alpha", 1) != 1 or len(add.args) != 2:
            continue
        left, right = add.args
        if not (_call(left, aten.bmm.default, aten.mm.default) and _call(right, left.target)
                and left is not right and len(left.users) == 1 and len(right.users) == 1):
            continue
        vals = [n.meta.get("val") for n in (*left.args, *right.args, add)]
        if not all(isinstance(v, torch.Tensor) for v in vals):
            continue
        a, b, c, d, out = vals
        if a.shape[:-1] != c.shape[:-1] or b.shape[:-2] != d.shape[:-2] or b.shape[-1] != d.shape[-1]:
            continue
        if out.numel() <= sum(v.numel() for v in (a, b, c, d)) or len({v.dtype for v in vals}) != 1:
            continue
        k = a.dim() - 1  # the contracted axis of the left factors; the right factors' is the one before last
        with g.inserting_before(add):
            lhs = g.call_function(aten.cat.default, ([left.args[0], right.args[0]], k))
            rhs = g.call_function(aten.cat.default, ([left.args[1], right.args[1]], k - 1))
            prod = g.call_function(left.target, (lhs, rhs))
        lhs_shape = (*a.shape[:-1], a.shape[-1] + c.shape[-1])
        rhs_shape = (*b.shape[:-2], b.shape[-2] + d.shape[-2], b.shape[-1])
        with getattr(a, "fake_mode", None) or contextlib.nullcontext():  # a traced value lives in its fake mode
            lhs.meta["val"] = torch.empty(lhs_shape, dtype=a.dtype, device=a.device)
            rhs.meta["val"] = torch.empty(rhs_shape, dtype=a.dtype, device=a.device)
        prod.meta["val"] = out
        add.replace_all_uses_with(prod)
        g.erase_node(add)
        g.erase_node(left)
        g.erase_node(right)
        rewritten += 1
    return rewritten


def clean_graph(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make a make_fx-traced JVP graph exportable (in place; returns ``gm``). See the module docstring."""
    g = gm.graph
    dead_checks = {aten.is_same_size.default, aten._has_same_storage_numel.default}
    for node in list(g.nodes):
        if node.op != "call_function":
            continue
        if node.target in (aten._efficientzerotensor.default, aten.empty_permuted.default):
            kwargs = {k: v for k, v in node.kwargs.items() if k in ("dtype", "device")}
            with g.inserting_before(node):
                zeros = g.call_function(aten.zeros.default, (node.args[0],), kwargs)
            zeros.meta.update(node.meta)
            node.replace_all_uses_with(zeros)
            g.erase_node(node)
        elif node.target is aten._new_zeros_with_same_feature_meta.default:
            # forward AD's zero tangent for a view of a tensor without one (e.g. the expanded text conditioning of a
            # latent model); no ONNX function exists for it
            zeros = _zero_node(g, node)
            if zeros is not None:
                node.replace_all_uses_with(zeros)
                g.erase_node(node)
        elif node.target in dead_checks and not node.users:
            g.erase_node(node)
    g.eliminate_dead_code()
    fold_zeros(gm)
    fuse_softmax_jvp(gm)
    fuse_matmul_sums(gm)
    # Weights are get_attr tensor attributes: turn them into buffers (after DCE, so dead meta constants are gone);
    # a tensor reached through two attributes is stored once. `keep` holds every original so that no address is
    # freed and reused while keys are compared.
    seen: dict[tuple, tuple[torch.fx.Node, torch.Tensor]] = {}
    keep: list[torch.Tensor] = []
    for node in list(g.nodes):
        if node.op != "get_attr":
            continue
        val = getattr(gm, node.target)
        if not isinstance(val, torch.Tensor):
            continue
        keep.append(val)
        try:
            key = (val.untyped_storage().data_ptr(), val.storage_offset(), tuple(val.shape), tuple(val.stride()),
                   val.dtype)
        except RuntimeError:  # no valid storage (never reached after DCE in practice): keep it, undeduplicated
            key = None
        if key is not None and key in seen and torch.equal(seen[key][1], val):
            node.replace_all_uses_with(seen[key][0])
            g.erase_node(node)
            continue
        if key is not None:
            seen[key] = (node, val)
        delattr(gm, node.target)
        gm.register_buffer(node.target, val.detach().clone())
    g.lint()
    gm.recompile()
    return gm


def trace_static(model, spec: GraphSpec, *, device: str | torch.device | None = None) -> TracedModule:
    """Trace ``spec``'s graph function at its static batch into a cleaned aten graph (see the module docstring)."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    device = model.device if device is None else device
    fn = graph_function(model, spec.graph)
    inputs = example_inputs(spec, num_timesteps=model.num_train_timesteps, device=device)
    with torch.no_grad():
        gm = make_fx(fn, tracing_mode="real", decomposition_table=core_aten_decompositions())(*inputs)
    return TracedModule(clean_graph(gm)).eval()
