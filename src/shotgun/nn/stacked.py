"""K small MLPs of one depth stacked into one module: the unit of batched training.

Models of a group share depth, batch norm and activation family (:func:`group_key`); hidden
widths are padded to the group's largest. Padded units stay exact zeros without masking: their
weights, biases and BatchNorm scale and shift start at zero, every activation maps 0 to 0, so they
never receive a gradient and Adam (element-wise) never moves them.

Weights of a group are stacked: the first layer as (n_in, K, width), so that the shared input
batch meets all K models in one matrix product giving (batch, K, width); later layers as
(K, in, out) for batched products giving (K, batch, width). Dropout, BatchNorm and the activation
of a layer are one autograd node with a hand-written backward (:class:`StackedBlock`). A model's
weights load from and unstack into the ``state_dict`` of :class:`shotgun.nn.mlp.MLP`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .mlp import initial_network

aten = torch.ops.aten

SLOPES = {"relu": 0.0, "leaky_relu": 0.01}  # nn.LeakyReLU's default slope


def activation_family(activation: str) -> str:
    """ReLU and LeakyReLU share a family (one stacked activation with per-model slopes)."""
    return "leaky" if activation in SLOPES else activation


def group_key(arch: Mapping) -> tuple:
    """Architectures with equal keys train in one stacked group."""
    return (len(arch["hidden"]), bool(arch["batch_norm"]), activation_family(arch["activation"]))


def plan_groups(archs: Sequence[Mapping], group_size: int) -> list[list[int]]:
    """Indices of ``archs`` per stacked group: same :func:`group_key`, then sorted by widths and
    cut into groups of at most ``group_size``, so that padding to a group's widest layers wastes
    little. Grouping changes speed only, never results."""
    keys: dict[tuple, list[int]] = {}
    for i, a in enumerate(archs):
        keys.setdefault(group_key(a), []).append(i)
    groups = []
    for members in keys.values():
        members = sorted(members, key=lambda i: archs[i]["hidden"][1:] + archs[i]["hidden"][:1])
        n = -(-len(members) // max(1, group_size))
        groups += [[int(i) for i in part] for part in np.array_split(members, n)]
    return groups


def activate_(y, family: str, segments, mdim: int):
    """Activation in place of ``y``; ``segments``: (start, stop, slope) runs of models along
    dimension ``mdim`` (models of a group are ordered by slope)."""
    if family == "elu":
        return F.elu_(y)
    if family == "tanh":
        return y.tanh_()
    for start, stop, slope in segments:
        part = y if len(segments) == 1 else y.narrow(mdim, start, stop - start)
        part.relu_() if slope == 0.0 else F.leaky_relu_(part, slope)
    return y


def _activation_grad(dh, h, family, segments, mdim):
    """dL/dy from dL/dh and the activation's output h (h > 0 exactly where y > 0)."""
    if family == "elu":
        return aten.elu_backward(dh, 1.0, 1, 1.0, True, h)
    if family == "tanh":
        return aten.tanh_backward(dh, h)
    dy = torch.empty_like(h)
    for start, stop, slope in segments:
        parts = [
            t if len(segments) == 1 else t.narrow(mdim, start, stop - start) for t in (dh, h, dy)
        ]
        if slope == 0.0:
            aten.threshold_backward.grad_input(parts[0], parts[1], 0.0, grad_input=parts[2])
        else:
            aten.leaky_relu_backward.grad_input(
                parts[0], parts[1], slope, True, grad_input=parts[2]
            )
    return dy


class StackedBlock(torch.autograd.Function):
    """Dropout mask, BatchNorm with batch statistics and activation of one stacked layer as one
    autograd node with a hand-written backward: fewer passes and temporaries than the chain of
    library ops."""

    # z: (..., width) pre-activations with the batch on dimension ``bdim`` (models on the
    # other of the first two); mask: dropout keep mask divided by the keep rate,
    # broadcastable to z, or None; gamma, beta: BatchNorm scale and shift with a size-1
    # batch dimension, or None; rm, rv: running statistics (shaped like gamma), updated in
    # place; segments: see activate_.
    @staticmethod
    def forward(ctx, z, mask, gamma, beta, rm, rv, bdim, family, segments):
        y = z * mask if mask is not None else z
        if gamma is not None:
            n = z.shape[bdim]
            mean = y.mean(bdim, keepdim=True)
            xhat = y.sub_(mean) if mask is not None else y - mean
            var = (xhat * xhat).mean(bdim, keepdim=True)
            with torch.no_grad():
                rm.mul_(0.9).add_(mean, alpha=0.1)
                rv.mul_(0.9).add_(var, alpha=0.1 * n / (n - 1))
            inv = var.add_(1e-5).rsqrt_()
            y = torch.addcmul(beta, xhat.mul_(inv), gamma)
        elif mask is None:
            y = z.clone()
        h = activate_(y, family, segments, 1 - bdim)
        ctx.bdim, ctx.family, ctx.segments = bdim, family, segments
        ctx.save_for_backward(h, mask, *((xhat, inv, gamma) if gamma is not None else ()))
        return h

    @staticmethod
    def backward(ctx, dh):
        h, mask, *bn = ctx.saved_tensors
        dy = _activation_grad(dh, h, ctx.family, ctx.segments, 1 - ctx.bdim)
        dgamma = dbeta = None
        if bn:
            xhat, inv, gamma = bn
            n = h.shape[ctx.bdim]
            dbeta = dy.sum(ctx.bdim, keepdim=True)
            dgamma = (dy * xhat).sum(ctx.bdim, keepdim=True)
            a = gamma * inv  # dz = a * (dy - dbeta / n - xhat * dgamma / n)
            dy = dy.mul_(a).addcmul_(xhat, a * dgamma, value=-1 / n).sub_(a * dbeta / n)
        if mask is not None:
            dy = dy.mul_(mask)
        return dy, None, dgamma, dbeta, None, None, None, None, None


class StackedGroup(nn.Module):
    """K models of one :func:`group_key`, stacked (see the module docstring). ``ids`` are the
    models' positions in the caller's list; models are kept ordered by activation slope."""

    def __init__(self, archs: Sequence[Mapping], seeds: Sequence[int], ids: Sequence[int], mm=None):
        super().__init__()
        self.mm = mm  # dtype of the hidden layers' matrix products (see trainer.mm_dtype)
        # ordered by activation slope: the activation runs on contiguous runs of models
        order = sorted(range(len(archs)), key=lambda k: SLOPES.get(archs[k]["activation"], 0))
        archs, seeds = [archs[k] for k in order], [seeds[k] for k in order]
        self.archs, self.ids = [dict(a) for a in archs], [ids[k] for k in order]
        assert all(group_key(a) == group_key(archs[0]) for a in archs)
        depth = len(archs[0]["hidden"])
        K, n_in = len(archs), archs[0]["n_in"]
        self.depth, self.n_in = depth, n_in
        self.batch_norm = bool(archs[0]["batch_norm"])
        self.family = activation_family(archs[0]["activation"])
        widths = self._widths()
        ins = [n_in] + widths[:-1]
        z = torch.zeros
        self.w = nn.ParameterList(
            [nn.Parameter(z(n_in, K, widths[0]))]
            + [nn.Parameter(z(K, ins[l], widths[l])) for l in range(1, depth)]
        )
        self.b = nn.ParameterList([nn.Parameter(z(K, wd)) for wd in widths])
        if self.batch_norm:
            self.gamma = nn.ParameterList([nn.Parameter(z(K, wd)) for wd in widths])
            self.beta = nn.ParameterList([nn.Parameter(z(K, wd)) for wd in widths])
            for l, wd in enumerate(widths):
                self.register_buffer(f"rm{l}", z(K, wd))
                self.register_buffer(f"rv{l}", torch.ones(K, wd))
        self.wo = nn.Parameter(z(K, widths[-1]))
        self.bo = nn.Parameter(z(K))
        self.register_buffer("p", z(K))
        self.register_buffer("p_index", z(K, dtype=torch.long), persistent=False)
        self._per_model()
        self.steps = 0  # BatchNorm's num_batches_tracked, equal for all models
        with torch.no_grad():
            for k, (a, s) in enumerate(zip(archs, seeds)):
                self.load_model(k, initial_network(a, s).state_dict())

    @property
    def K(self) -> int:
        return len(self.archs)

    def _widths(self) -> list[int]:
        return [max(a["hidden"][l] for a in self.archs) for l in range(self.depth)]

    def _per_model(self):
        """Dropout rates (one float when the group shares it) and runs of equal slopes."""
        ps = [float(a["dropout"]) for a in self.archs]
        self.p.copy_(torch.tensor(ps))
        self.p_shared = ps[0] if len(set(ps)) == 1 else None
        self.segments = []
        for k, a in enumerate(self.archs):
            slope = SLOPES.get(a["activation"], 0.0)
            if self.segments and self.segments[-1][2] == slope:
                self.segments[-1] = (self.segments[-1][0], k + 1, slope)
            else:
                self.segments.append((k, k + 1, slope))
        self.p_values = sorted(set(ps))  # per-model masks: one per rate, gathered by model
        self.p_index = torch.tensor(
            [self.p_values.index(p) for p in ps], device=self.p.device
        )  # a buffer: follows .to()
        self.widths = self._widths()

    # -- per-model views ---------------------------------------------------------------
    def _views(self, k: int, arch: Mapping):
        """(state_dict key, view into the stacked tensor) of model k."""
        h, ins = arch["hidden"], [arch["n_in"]] + arch["hidden"][:-1]
        out = []
        for l in range(self.depth):
            w = self.w[l][:, k, : h[l]] if l == 0 else self.w[l][k, : ins[l], : h[l]]
            out += [
                (f"blocks.{l}.linear.weight", w.T),
                (f"blocks.{l}.linear.bias", self.b[l][k, : h[l]]),
            ]
            if self.batch_norm:
                out += [
                    (f"blocks.{l}.norm.weight", self.gamma[l][k, : h[l]]),
                    (f"blocks.{l}.norm.bias", self.beta[l][k, : h[l]]),
                    (f"blocks.{l}.norm.running_mean", getattr(self, f"rm{l}")[k, : h[l]]),
                    (f"blocks.{l}.norm.running_var", getattr(self, f"rv{l}")[k, : h[l]]),
                ]
        out += [("output.weight", self.wo[k : k + 1, : h[-1]]), ("output.bias", self.bo[k : k + 1])]
        return out

    def load_model(self, k: int, state: Mapping):
        for key, view in self._views(k, self.archs[k]):
            view.copy_(state[key])

    def model_state(self, k: int) -> dict:
        """State dict of model k in the layout of ``build_network(arch)``."""
        state = {
            key: v.detach().to("cpu").clone().contiguous()
            for key, v in self._views(k, self.archs[k])
        }
        if self.batch_norm:
            for l in range(self.depth):
                state[f"blocks.{l}.norm.num_batches_tracked"] = torch.tensor(self.steps)
        return state

    # -- compaction --------------------------------------------------------------------
    def _layout(self):
        """(tensor, model dimension, unit dimension per layer index) of every stacked tensor."""
        out = [(self.w[0], 1, {2: 0})]
        out += [(self.w[l], 0, {1: l - 1, 2: l}) for l in range(1, self.depth)]
        for l in range(self.depth):
            out.append((self.b[l], 0, {1: l}))
            if self.batch_norm:
                out += [
                    (self.gamma[l], 0, {1: l}),
                    (self.beta[l], 0, {1: l}),
                    (getattr(self, f"rm{l}"), 0, {1: l}),
                    (getattr(self, f"rv{l}"), 0, {1: l}),
                ]
        return out + [(self.wo, 0, {1: self.depth - 1}), (self.bo, 0, {}), (self.p, 0, {})]

    def select(self, keep: Sequence[int], optimizer=None):
        """Keep only the models at positions ``keep`` and narrow the padded widths to theirs;
        the optimizer's state follows. Padding is zero, so the kept models are unchanged."""
        idx = torch.as_tensor(list(keep), dtype=torch.long, device=self.bo.device)
        self.archs = [self.archs[k] for k in keep]
        self.ids = [self.ids[k] for k in keep]
        widths = self._widths() if keep else [0] * self.depth

        def cut(t, mdim, units):
            t = t.index_select(mdim, idx)
            for d, l in units.items():
                t = t.narrow(d, 0, widths[l])
            return t.contiguous()

        state = optimizer.state if optimizer is not None else {}
        with torch.no_grad():
            for t, mdim, units in self._layout():
                if isinstance(t, nn.Parameter):
                    st = state.get(t, {})
                    for key, v in st.items():
                        if torch.is_tensor(v) and v.shape == t.shape:
                            st[key] = cut(v, mdim, units)
                    t.grad = None
                t.data = cut(t.data, mdim, units)
        if keep:
            self._per_model()

    # -- forward -----------------------------------------------------------------------
    def _product(self, op, b, h, w):
        """``op(b, h, w)`` (addmm, baddbmm), on ``self.mm`` operands if set; h's dtype out."""
        if self.mm is None:
            return op(b, h, w)
        return op(b.to(self.mm), h.to(self.mm), w.to(self.mm)).to(h.dtype)

    def forward(self, x, masks=None):
        """Predictions (K, batch); ``masks`` (a :class:`Masks`) enables training mode.

        The first layer computes (batch, K, width), later layers (K, batch, width); the
        first layer's output is read by the next product through a strided view."""
        B, K = x.shape[0], self.K
        training = masks is not None
        h = bdim = None  # the previous layer's activations and their batch dimension
        for l in range(self.depth):
            W = self.widths[l]
            if l == 0:  # the shared input meets all K models in one product
                z = self._product(
                    torch.addmm, self.b[0].view(1, -1), x, self.w[0].view(self.n_in, -1)
                )
                z, bdim = z.view(B, K, W), 0
            else:
                h_in = h if bdim == 1 else h.transpose(0, 1)
                z = self._product(torch.baddbmm, self.b[l].unsqueeze(1), h_in, self.w[l])
                bdim = 1
            mask = None
            if training and self.p_shared is None:
                mask = masks.per_model(l, W, self.p_values, self.p_index)
                mask = mask if bdim else mask.transpose(0, 1)
            elif training and self.p_shared:
                mask = masks(l, W, self.p_shared).unsqueeze(1 - bdim)
            if self.batch_norm:
                gamma, beta = self.gamma[l].unsqueeze(bdim), self.beta[l].unsqueeze(bdim)
                rm = getattr(self, f"rm{l}").unsqueeze(bdim)
                rv = getattr(self, f"rv{l}").unsqueeze(bdim)
                if training:
                    h = StackedBlock.apply(
                        z, mask, gamma, beta, rm, rv, bdim, self.family, self.segments
                    )
                    continue
                scale = gamma * (rv + 1e-5).rsqrt()  # running statistics: an affine map
                z = torch.addcmul(beta - rm * scale, z, scale)
            elif training:
                h = StackedBlock.apply(
                    z, mask, None, None, None, None, bdim, self.family, self.segments
                )
                continue
            h = activate_(z, self.family, self.segments, 1 - bdim)  # no gradient here
        if training:
            self.steps += 1
        h = h if bdim == 1 else h.transpose(0, 1)
        return (h * self.wo.unsqueeze(1)).sum(-1) + self.bo.unsqueeze(1)  # faster than bmm


class Masks:
    """Dropout keep masks of one step, from the shared uniforms ``u`` (layers, batch, width):
    cached per (layer, rate) so that groups with equal rates build each mask once."""

    def __init__(self, u):
        self.u, self.cache = u, {}

    def __call__(self, layer: int, width: int, p: float):
        """(batch, width) mask of rate ``p``."""
        m = self.cache.get((layer, p))
        if m is None:
            m = self.cache[(layer, p)] = (self.u[layer] >= p) * (1 / (1 - p))
        return m[:, :width]

    def per_model(self, layer: int, width: int, rates: Sequence[float], index):
        """(K, batch, width) masks: model k gets the mask of rate ``rates[index[k]]``."""
        return torch.stack([self(layer, width, p) for p in rates]).index_select(0, index)
