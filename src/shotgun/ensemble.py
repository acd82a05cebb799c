"""Batched training of many small MLPs: K networks as one computation, driven by Lightning.

Models of one shard share the training batches (one order per cell) and the dropout noise (one
uniform draw per step and layer, thresholded by each model's own rate), so a model's training
does not depend on which other models it is trained with. Models are grouped by depth, batch
norm and activation family; within a group, hidden widths are padded to the group's largest.
Padded units stay exact zeros without masking: their weights, biases and BatchNorm scale and
shift start at zero, every activation maps 0 to 0, so they never receive a gradient and Adam
(element-wise) never moves them.

Weights of a group are stacked: the first layer as (n_in, K, width), so that the shared input
batch meets all K models in one matrix product giving (batch, K, width); later layers as
(K, in, out) for batched products giving (K, batch, width). Dropout, BatchNorm and the
activation of a layer are one autograd node with a hand-written backward (:func:`_block_function`).

Each model has its own early stopping and keeps its own best weights; the best weights are
unstacked into the ``state_dict`` of :func:`shotgun.models.build_network`. A model that stops is
removed from its group (with its optimizer state) at the end of that epoch and the group's
padding narrows to the remaining models, so stopped models cost no more compute.

On CPU, the groups of a step are shared among one thread per core, each running whole groups
(forward, backward, the group's own Adam step) with one intra-op thread: about 15 % less CPU
time than every operation split over the cores (measured in ``benchmarks/train_throughput.py``).
With ``trainer.precision: bf16`` the hidden layers' matrix products take bfloat16 operands
and give bfloat16 results (accumulated in float32); weights, Adam, BatchNorm, activations and
loss stay float32, and :func:`fit_single` rounds the same operands. ``trainer.matmul_precision``
chooses how torch computes float32 products (:func:`matmul_precision`).

:func:`fit_single` trains one plain ``build_network`` module with the same protocol: it is the
reference that a model trained inside an ensemble equals (up to float summation order).
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np

from .models import build_network, max_width

SLOPES = {"relu": 0.0, "leaky_relu": 0.01}  # nn.LeakyReLU's default slope


def _family(activation: str) -> str:
    return "leaky" if activation in SLOPES else activation


def group_key(arch: Mapping) -> tuple:
    """Architectures with equal keys train in one stacked group."""
    return (len(arch["hidden"]), bool(arch["batch_norm"]), _family(arch["activation"]))


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


class Batches:
    """Shuffled mini-batches of tensors already on the training device; one order per seed."""

    def __init__(self, X, y, batch_size: int, seed: int | None):
        import torch

        self.X, self.y, self.batch_size = X, y, batch_size
        self.gen = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self):
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        import torch

        n = len(self.y)
        if self.gen is None:  # validation: the whole split, in order
            yield self.X, self.y
            return
        perm = torch.randperm(n, generator=self.gen).to(self.X.device)
        for start in range(0, n, self.batch_size):
            sel = perm[start:start + self.batch_size]
            if len(sel) > 1 or start == 0:  # BatchNorm needs two samples
                yield self.X[sel], self.y[sel]


class DropoutNoise:
    """Uniform noise for every dropout layer of a step, shared by all models of a shard.

    Each step draws (max layers, batch, max width) uniforms from a CPU generator, whatever the
    models trained; a unit is kept where its uniform is >= the model's dropout rate.
    """

    def __init__(self, seed: int, n_layers: int, width: int):
        import torch

        self.gen = torch.Generator().manual_seed(seed)
        self.shape = (n_layers, width)

    def draw(self, batch: int, device):
        import torch

        u = torch.rand(self.shape[0], batch, self.shape[1], generator=self.gen)
        return u.to(device, non_blocking=True)


def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*configure_optimizers.*")


def _adam(params, optim: Mapping):
    """Adam, fused into one kernel per tensor (CPU and CUDA): element-wise, so K stacked models
    update exactly as K separate optimisers would."""
    import torch

    return torch.optim.Adam(params, lr=optim["lr"], weight_decay=optim["weight_decay"],
                            fused=True)


PRECISIONS = {"32": None, "bf16": "bfloat16"}


def mm_dtype(cfg: Mapping):
    """The torch dtype of the hidden layers' matrix products for ``trainer.precision``: None
    for ``32`` (the tensors' own dtype throughout), bfloat16 for ``bf16`` (bfloat16 operands
    and results, accumulated in float32 inside the product; weights, Adam, BatchNorm,
    activations and loss stay float32)."""
    import torch

    precision = str(cfg["trainer"].get("precision", 32))
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {sorted(PRECISIONS)}, "
                         f"got {precision!r}")
    return PRECISIONS[precision] and getattr(torch, PRECISIONS[precision])


MATMUL_PRECISIONS = ("highest", "high", "medium")


@contextmanager
def matmul_precision(cfg: Mapping):
    """torch's float32 matmul precision set to ``trainer.matmul_precision`` (default
    ``highest``) for the duration, then restored. ``medium`` lets oneDNN take float32 products
    on CPUs with AVX-512: bfloat16 inside where it has fast kernels for it (AMX), float32
    kernels elsewhere (exact on AMD Zen 5, at about twice MKL's rate); on CUDA, ``high`` and
    ``medium`` allow TF32."""
    import torch

    value = str(cfg["trainer"].get("matmul_precision", "highest"))
    if value not in MATMUL_PRECISIONS:
        raise ValueError(f"trainer.matmul_precision must be one of {list(MATMUL_PRECISIONS)}, "
                         f"got {value!r}")
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _trainer(cfg: Mapping, callbacks):
    import lightning as L

    t = cfg["trainer"]
    return L.Trainer(
        accelerator=t["accelerator"], devices=1, max_epochs=t["max_epochs"], callbacks=callbacks,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic="warn",
    )


def _fit(cfg: Mapping, module, callbacks, X_tr, y_tr, X_val, y_val, batch_seed: int) -> None:
    """Train ``module`` with one Lightning Trainer: shuffled batches of the training split, the
    whole validation split after each epoch."""
    t = cfg["trainer"]
    trainer = _trainer(cfg, callbacks)
    with matmul_precision(cfg):
        trainer.fit(module, Batches(X_tr, y_tr, t["batch_size"], batch_seed),
                    Batches(X_val, y_val, len(y_val), None))


def _activate_(y, family: str, segments, mdim: int):
    """Activation in place of ``y``; ``segments``: (start, stop, slope) runs of models along
    dimension ``mdim`` (models of a group are ordered by slope)."""
    import torch.nn.functional as F

    if family == "elu":
        return F.elu_(y)
    if family == "tanh":
        return y.tanh_()
    for start, stop, slope in segments:
        part = y if len(segments) == 1 else y.narrow(mdim, start, stop - start)
        part.relu_() if slope == 0.0 else F.leaky_relu_(part, slope)
    return y


def _block_function():
    """Dropout mask, BatchNorm with batch statistics and activation of one stacked layer as one
    autograd node with a hand-written backward: fewer passes and temporaries than the chain of
    library ops."""
    import torch

    aten = torch.ops.aten

    def activation_grad(dh, h, family, segments, mdim):
        """dL/dy from dL/dh and the activation's output h (h > 0 exactly where y > 0)."""
        if family == "elu":
            return aten.elu_backward(dh, 1.0, 1, 1.0, True, h)
        if family == "tanh":
            return aten.tanh_backward(dh, h)
        dy = torch.empty_like(h)
        for start, stop, slope in segments:
            parts = [t if len(segments) == 1 else t.narrow(mdim, start, stop - start)
                     for t in (dh, h, dy)]
            if slope == 0.0:
                aten.threshold_backward.grad_input(parts[0], parts[1], 0.0, grad_input=parts[2])
            else:
                aten.leaky_relu_backward.grad_input(parts[0], parts[1], slope, True,
                                                    grad_input=parts[2])
        return dy

    class Block(torch.autograd.Function):
        # z: (..., width) pre-activations with the batch on dimension ``bdim`` (models on the
        # other of the first two); mask: dropout keep mask divided by the keep rate,
        # broadcastable to z, or None; gamma, beta: BatchNorm scale and shift with a size-1
        # batch dimension, or None; rm, rv: running statistics (shaped like gamma), updated in
        # place; segments: see _activate_.
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
            h = _activate_(y, family, segments, 1 - bdim)
            ctx.bdim, ctx.family, ctx.segments = bdim, family, segments
            ctx.save_for_backward(h, mask, *((xhat, inv, gamma) if gamma is not None else ()))
            return h

        @staticmethod
        def backward(ctx, dh):
            h, mask, *bn = ctx.saved_tensors
            dy = activation_grad(dh, h, ctx.family, ctx.segments, 1 - ctx.bdim)
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

    return Block.apply


def _stacked_module():
    """The stacked K-model module class (built lazily: importing this module skips torch)."""
    import torch
    from torch import nn

    block = _block_function()

    class _Stacked(nn.Module):
        def __init__(self, archs: Sequence[Mapping], seeds: Sequence[int], ids: Sequence[int],
                     mm=None):
            super().__init__()
            self.mm = mm  # dtype of the hidden layers' matrix products (see mm_dtype)
            # ordered by activation slope: the activation runs on contiguous runs of models
            order = sorted(range(len(archs)), key=lambda k: SLOPES.get(archs[k]["activation"], 0))
            archs, seeds = [archs[k] for k in order], [seeds[k] for k in order]
            self.archs, self.ids = [dict(a) for a in archs], [ids[k] for k in order]
            assert all(group_key(a) == group_key(archs[0]) for a in archs)
            depth = len(archs[0]["hidden"])
            K, n_in = len(archs), archs[0]["n_in"]
            self.depth, self.n_in = depth, n_in
            self.batch_norm = bool(archs[0]["batch_norm"])
            self.family = _family(archs[0]["activation"])
            widths = self._widths()
            ins = [n_in] + widths[:-1]
            z = torch.zeros
            self.w = nn.ParameterList(
                [nn.Parameter(z(n_in, K, widths[0]))]
                + [nn.Parameter(z(K, ins[l], widths[l])) for l in range(1, depth)])
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
                    torch.manual_seed(s)
                    self.load_model(k, build_network(a).state_dict())

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
            self.p_index = torch.tensor([self.p_values.index(p) for p in ps],
                                        device=self.p.device)  # a buffer: follows .to()
            self.widths = self._widths()

        # -- per-model views ---------------------------------------------------------------
        def _views(self, k: int, arch: Mapping):
            """(state_dict key, view into the stacked tensor) of model k."""
            h, ins = arch["hidden"], [arch["n_in"]] + arch["hidden"][:-1]
            out = []
            for l in range(self.depth):
                w = self.w[l][:, k, :h[l]] if l == 0 else self.w[l][k, :ins[l], :h[l]]
                out += [(f"blocks.{l}.linear.weight", w.T), (f"blocks.{l}.linear.bias",
                                                             self.b[l][k, :h[l]])]
                if self.batch_norm:
                    out += [(f"blocks.{l}.norm.weight", self.gamma[l][k, :h[l]]),
                            (f"blocks.{l}.norm.bias", self.beta[l][k, :h[l]]),
                            (f"blocks.{l}.norm.running_mean", getattr(self, f"rm{l}")[k, :h[l]]),
                            (f"blocks.{l}.norm.running_var", getattr(self, f"rv{l}")[k, :h[l]])]
            out += [("output.weight", self.wo[k:k + 1, :h[-1]]), ("output.bias", self.bo[k:k + 1])]
            return out

        def load_model(self, k: int, state: Mapping):
            for key, view in self._views(k, self.archs[k]):
                view.copy_(state[key])

        def model_state(self, k: int) -> dict:
            """State dict of model k in the layout of ``build_network(arch)``."""
            state = {key: v.detach().to("cpu").clone().contiguous()
                     for key, v in self._views(k, self.archs[k])}
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
                    out += [(self.gamma[l], 0, {1: l}), (self.beta[l], 0, {1: l}),
                            (getattr(self, f"rm{l}"), 0, {1: l}),
                            (getattr(self, f"rv{l}"), 0, {1: l})]
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
            """Predictions (K, batch); ``masks`` (a :class:`_Masks`) enables training mode.

            The first layer computes (batch, K, width), later layers (K, batch, width); the
            first layer's output is read by the next product through a strided view."""
            B, K = x.shape[0], self.K
            training = masks is not None
            for l in range(self.depth):
                W = self.widths[l]
                if l == 0:  # the shared input meets all K models in one product
                    z = self._product(torch.addmm, self.b[0].view(1, -1), x,
                                      self.w[0].view(self.n_in, -1))
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
                        h = block(z, mask, gamma, beta, rm, rv, bdim, self.family, self.segments)
                        continue
                    scale = gamma * (rv + 1e-5).rsqrt()  # running statistics: an affine map
                    z = torch.addcmul(beta - rm * scale, z, scale)
                elif training:
                    h = block(z, mask, None, None, None, None, bdim, self.family, self.segments)
                    continue
                h = _activate_(z, self.family, self.segments, 1 - bdim)  # no gradient here
            if training:
                self.steps += 1
            h = h if bdim == 1 else h.transpose(0, 1)
            return (h * self.wo.unsqueeze(1)).sum(-1) + self.bo.unsqueeze(1)  # faster than bmm

    return _Stacked


class _Masks:
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
        import torch

        return torch.stack([self(layer, width, p) for p in rates]).index_select(0, index)


def _ensemble_module(groups, cfg: Mapping, noise: DropoutNoise, n_models: int,
                     workers: int = 1):
    """The LightningModule holding every group of a chunk. Each group has its own loss and its
    own Adam (element-wise, so the same as one per model): each model gets exactly its own
    gradient and update.

    With ``workers`` > 1 (CPU), the groups of a step are shared among that many threads (the
    caller's and ``module.pool``'s), each running its groups' forward, backward and Adam step
    with one intra-op thread: the cores work on whole groups instead of meeting at a fork-join
    barrier after every operation, which also keeps a shared machine's load from stalling them.
    """
    import lightning as L
    import torch

    optim = cfg["optim"]

    class Ensemble(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.groups = torch.nn.ModuleList(groups)
            self.val_losses = None
            self.opts: list = []
            self.pool = None

        def active_groups(self):
            return [g for g in self.groups if g.K]

        def configure_optimizers(self):
            self.opts = [_adam(g.parameters(), optim) for g in self.groups]
            return self.opts

        def _parts(self) -> list[list[int]]:
            """Indices of the active groups per worker, balanced by stacked weights."""
            active = [i for i, g in enumerate(self.groups) if g.K]
            cost = {i: sum(w.numel() for w in self.groups[i].w) for i in active}
            parts = [[] for _ in range(max(1, min(workers, len(active))))]
            load = [0] * len(parts)
            for i in sorted(active, key=cost.get, reverse=True):
                j = load.index(min(load))
                parts[j].append(i)
                load[j] += cost[i]
            return parts

        def _run(self, fn) -> dict:
            """{group index: fn(group index)} over the active groups, shared among the workers
            (which take the caller's gradient and inference modes)."""
            modes = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

            def run(part):
                with torch.inference_mode(modes[1]), torch.set_grad_enabled(modes[0]):
                    return {i: fn(i) for i in part}

            parts = self._parts()
            futures = [self.pool.submit(run, part) for part in parts[1:]]
            try:
                out = run(parts[0])
            finally:  # wait for the workers whatever happened here
                done = [f.result() for f in futures]
            for d in done:
                out.update(d)
            return out

        def training_step(self, batch, _):
            x, y = batch
            masks = _Masks(noise.draw(len(y), x.device))

            def train(i):
                opt = self.opts[i]
                opt.zero_grad(set_to_none=True)
                # a plain backward: the Trainer has no precision plugin to apply
                ((self.groups[i](x, masks) - y) ** 2).mean(1).sum().backward()
                opt.step()

            self._run(train)

        def validation_step(self, batch, _):
            x, y = batch
            losses = torch.full((n_models,), float("nan"), dtype=torch.float64)
            for i, loss in self._run(lambda i: ((self.groups[i](x) - y) ** 2).mean(1)).items():
                losses[self.groups[i].ids] = loss.double().cpu()
            self.val_losses = losses

        def drop(self, stopped: set[int]):
            """Remove stopped models from the batched computation."""
            for g, opt in zip(self.groups, self.opts):
                keep = [k for k, i in enumerate(g.ids) if i not in stopped]
                if len(keep) < g.K:
                    g.select(keep, opt)

    return Ensemble()


def _keep_best_callback(models, patience: int):
    """Per-model early stopping: snapshot of each model's best weights; stop when all stopped.

    ``models(i)`` gives (group, position) of model i, or ``models`` is a list of them. Models
    that stop are dropped from the computation when the module has ``drop``."""
    from lightning.pytorch.callbacks import Callback

    class KeepBest(Callback):
        def __init__(self, n):
            self.best = np.full(n, np.inf)
            self.best_epoch = np.full(n, -1)
            self.epochs = np.zeros(n, dtype=int)
            self.wait = np.zeros(n, dtype=int)
            self.active = np.ones(n, dtype=bool)
            self.states: list[dict | None] = [None] * n

        def on_validation_epoch_end(self, trainer, module):
            losses = module.val_losses.detach().double().cpu().numpy()
            epoch = trainer.current_epoch
            where = models() if callable(models) else models
            stopped = set()
            for i in np.flatnonzero(self.active):
                group, k = where[i]
                self.epochs[i] = epoch + 1
                if losses[i] < self.best[i]:
                    self.best[i], self.best_epoch[i], self.wait[i] = losses[i], epoch, 0
                    self.states[i] = group.model_state(k)
                else:
                    self.wait[i] += 1
                    if self.wait[i] >= patience:
                        self.active[i] = False
                        stopped.add(int(i))
            if not self.active.any():
                trainer.should_stop = True
            elif stopped and hasattr(module, "drop"):
                module.drop(stopped)

    return KeepBest(len(models()) if callable(models) else len(models))


def fit_ensemble(archs: Sequence[Mapping], seeds: Sequence[int], cfg: Mapping,
                 X_tr, y_tr, X_val, y_val, batch_seed: int, noise_seed: int,
                 noise_shape: tuple[int, int]) -> list[tuple[dict, dict]]:
    """Train K models together; returns (best state_dict, fit stats) per model, in input order.

    ``X_*``/``y_*`` are float32 tensors on the training device; ``noise_shape`` is
    (max layers, max width) of the architecture space (see :func:`noise_shape`).
    """
    import torch

    _quiet_lightning()
    Stacked = _stacked_module()
    t = cfg["trainer"]
    mm = mm_dtype(cfg)
    groups = [Stacked([archs[i] for i in members], [seeds[i] for i in members], members, mm)
              for members in plan_groups(archs, int(t.get("group_size") or len(archs)))]
    threads = torch.get_num_threads()
    workers = threads if X_tr.device.type == "cpu" else 1
    module = _ensemble_module(groups, cfg, DropoutNoise(noise_seed, *noise_shape), len(archs),
                              workers)

    def where():
        return {i: (g, k) for g in module.active_groups() for k, i in enumerate(g.ids)}

    keep = _keep_best_callback(where, t["patience"])
    if workers > 1:
        module.pool = ThreadPoolExecutor(workers - 1, initializer=torch.set_num_threads,
                                         initargs=(1,))
        torch.set_num_threads(1)
    try:
        _fit(cfg, module, [keep], X_tr, y_tr, X_val, y_val, batch_seed)
    finally:
        if module.pool is not None:
            module.pool.shutdown()
            module.pool = None
            torch.set_num_threads(threads)
    return [(keep.states[i], {"best_val_mse": float(keep.best[i]),
                              "best_epoch": int(keep.best_epoch[i]),
                              "epochs": int(keep.epochs[i])}) for i in range(len(archs))]


def noise_shape(n_in: int, space: Mapping) -> tuple[int, int]:
    """(max hidden layers, max hidden width) of an architecture space for ``n_in`` inputs."""
    return int(space["n_layers"][1]), max_width(n_in, space)


def fit_single(arch: Mapping, seed: int, cfg: Mapping, X_tr, y_tr, X_val, y_val,
               batch_seed: int, noise_seed: int, noise_shape: tuple[int, int]):
    """Train one plain ``build_network`` module with the ensemble's protocol (the reference).

    Returns (best state_dict, fit stats)."""
    import lightning as L
    import torch

    _quiet_lightning()
    torch.manual_seed(seed)
    net = build_network(arch)
    mm = mm_dtype(cfg)
    if mm is not None:  # hidden layers' products on mm operands, as in the ensemble
        class MixedLinear(torch.nn.Linear):
            def forward(self, x):
                return torch.nn.functional.linear(x.to(mm), self.weight.to(mm),
                                                  self.bias.to(mm)).to(x.dtype)

        for block in net.blocks:
            with torch.device("meta"):
                mixed = MixedLinear(block["linear"].in_features, block["linear"].out_features)
            mixed.load_state_dict(block["linear"].state_dict(), assign=True)
            block["linear"] = mixed
    noise = DropoutNoise(noise_seed, *noise_shape)
    optim = cfg["optim"]

    class SharedNoiseDropout(torch.nn.Module):
        def __init__(self, layer: int):
            super().__init__()
            self.layer, self.u = layer, None

        def forward(self, z):
            if not self.training:
                return z
            p = float(arch["dropout"])
            return z * (self.u[self.layer, :, :z.shape[1]] >= p) / (1 - p)

    drops = [SharedNoiseDropout(l) for l in range(len(net.blocks))]
    for block, d in zip(net.blocks, drops):
        block["dropout"] = d

    class Single(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.val_losses = None

        def configure_optimizers(self):
            return _adam(self.parameters(), optim)

        def training_step(self, batch, _):
            x, y = batch
            u = noise.draw(len(y), x.device)
            for d in drops:
                d.u = u
            return ((self.net(x) - y) ** 2).mean()

        def validation_step(self, batch, _):
            x, y = batch
            self.val_losses = ((self.net(x) - y) ** 2).mean().reshape(1)

    class _View:  # what the early-stopping callback needs from a group
        @staticmethod
        def model_state(_):
            return {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}

    keep = _keep_best_callback([(_View, 0)], cfg["trainer"]["patience"])
    _fit(cfg, Single(), [keep], X_tr, y_tr, X_val, y_val, batch_seed)
    return keep.states[0], {"best_val_mse": float(keep.best[0]),
                            "best_epoch": int(keep.best_epoch[0]), "epochs": int(keep.epochs[0])}
