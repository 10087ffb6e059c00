"""The fused group's model and optimizer: K members' parameters stacked along a first dimension, one vmapped step
(``torch.func``: ``stack_module_state`` + ``functional_call`` + ``vmap(grad_and_value)``) and evaluation, and
torch.optim's SGD / Adam / AdamW written over the stacked tensors with each member's hyperparameters as a column.
``training.fused`` trains a group with them; this module knows no engine, run or sweep."""

from __future__ import annotations

import copy
from typing import Any

from ignite_sweep.training.config import TrainConfig


class Stack:
    """The group's model: K members' parameters stacked (dim 0), one skeleton module on the meta device, the
    vmapped step and evaluation, and the stacked optimizer. ``keep(positions)`` drops the other members' slices."""

    def __init__(self, shared: TrainConfig, cfgs: list[TrainConfig], data: Any) -> None:
        import torch
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        from ignite_sweep.training.models import build_model
        from ignite_sweep.training.train import build_loss, build_optimizer

        self.data, self.device = data, data.train_x.device
        self.models, self.optimizers = [], []
        for cfg in cfgs:  # each member's init as train() makes it: seeded, then built
            torch.manual_seed(cfg.seed)
            model = build_model(cfg.model, data.in_channels, data.image_size, data.num_classes, cfg.dropout,
                                cfg.factory_kwargs("model")).to(self.device)  # fmt: skip
            self.models.append(model)
            self.optimizers.append(build_optimizer(cfg, model))
        params, buffers = stack_module_state(self.models)
        self.params = {k: v.detach() for k, v in params.items()}
        self.buffers = buffers
        self.skeleton = copy.deepcopy(self.models[0]).to("meta")
        loss_fn = build_loss(shared.loss)

        def loss(params: Any, buffers: Any, x: Any, y: Any) -> Any:
            return loss_fn(functional_call(self.skeleton, (params, buffers), (x,)), y)

        def predict(params: Any, buffers: Any, x: Any) -> Any:
            return functional_call(self.skeleton, (params, buffers), (x,))

        self._step = vmap(grad_and_value(loss), in_dims=(0, 0, None, None), randomness="same")
        self._predict = vmap(predict, in_dims=(0, 0, None), randomness="same")
        self._loss = vmap(loss_fn, in_dims=(0, None))
        # a model whose evaluation depends on the whole batch (batch norm without running statistics) is evaluated
        # on whole batches; any other in slices (evaluate_batch)
        self._whole_batches = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
                                  for m in self.skeleton.modules())  # fmt: skip
        self.optimizer = StackedOptimizer(shared.optimizer, self.optimizers, self.params)
        self.grads: dict[str, Any] = {}

    @property
    def size(self) -> int:
        """How many members the stack holds now."""
        return len(next(iter(self.params.values())))

    def forward_backward(self, x: Any, y: Any) -> tuple[Any, dict[str, Any]]:
        grads, losses = self._step(self.params, self.buffers, x, y)
        return losses.detach(), grads

    def step(self, x: Any, y: Any) -> Any:
        """One training step of every member; returns the K losses (a tensor on the device)."""
        import torch

        losses, self.grads = self.forward_backward(x, y)
        with torch.no_grad():
            self.optimizer.step(self.params, self.grads)
        return losses

    def evaluate_batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Each member's number of correct predictions and summed loss on one batch (Ignite's Accuracy, and Loss:
        the loss of the whole batch times its size). The model runs on slices of ``len(x) / K`` samples, so K
        members' activations take what one run's batch takes alone; the loss is taken on the whole batch's output."""
        import torch

        size = len(x)
        step = size if self._whole_batches else max(1, -(-size // self.size))
        with torch.no_grad():
            out = torch.cat([self._predict(self.params, self.buffers, x[start : start + step])
                             for start in range(0, size, step)], dim=1)  # fmt: skip
            losses = self._loss(out, y)
        return (out.argmax(dim=-1) == y).sum(dim=-1), losses * size

    def grad_norms(self) -> Any:
        """Each member's global L2 gradient norm (``torch.nn.utils.get_total_norm`` per member)."""
        import torch

        if not self.grads:
            return torch.zeros(self.size, device=self.device)
        norms = [g.flatten(1).norm(dim=1) for g in self.grads.values()]
        return torch.stack(norms).norm(dim=0)

    def keep(self, positions: list[int]) -> None:
        import torch

        index = torch.tensor(positions, device=self.device)
        self.params = {k: v.index_select(0, index) for k, v in self.params.items()}
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self.grads = {k: v.index_select(0, index) for k, v in self.grads.items()}
        self.models = [self.models[p] for p in positions]
        self.optimizers = [self.optimizers[p] for p in positions]
        self.optimizer.keep(positions, self.optimizers)

    def materialize(self, position: int) -> None:
        """Copy one member's slice into its own module and torch.optim optimizer (checkpoints, the W&B artifact)."""
        import torch

        model, optimizer = self.models[position], self.optimizers[position]
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.params[name][position])
            for name, b in model.named_buffers():
                if name in self.buffers:
                    b.copy_(self.buffers[name][position])
        self.optimizer.export(position, dict(model.named_parameters()), optimizer)


class StackedOptimizer:
    """torch.optim's single-tensor SGD, Adam and AdamW (``_single_tensor_sgd`` / ``_single_tensor_adam``, what
    torch.optim runs on the CPU) over stacked tensors, each member's hyperparameters a column: the same operations
    in the same order, so each member's update is its own optimizer's to rounding. The lr is read from each
    member's torch.optim optimizer every step (its Ignite scheduler moves it there)."""

    CONSTANT = frozenset({"weight_decay", "momentum", "nesterov", "one_minus_beta1", "beta2", "one_minus_beta2", "eps"})
    """The columns that stay as they are from step to step (until a member leaves)."""

    def __init__(self, kind: str, optimizers: list[Any], params: dict[str, Any]) -> None:
        import torch

        self._torch = torch
        self._buffers: dict[str, tuple[Any, Any]] = {}
        self.kind, self.steps = kind, 0
        self.state: dict[str, dict[str, Any]] = {name: {} for name in params}
        for group in (o.param_groups[0] for o in optimizers):
            unsupported = [k for k in ("maximize", "amsgrad", "differentiable") if group.get(k)]
            if group.get("dampening", 0) or unsupported:
                raise ValueError(f"optimizer {kind} with {unsupported or 'dampening'} has no fused form")
        self.keep(None, optimizers)

    def keep(self, positions: list[int] | None, optimizers: list[Any]) -> None:
        """Drop the state of the members not at ``positions`` (None: keep all)."""
        if positions is not None:
            for slot in self.state.values():
                for k, v in slot.items():
                    slot[k] = v.index_select(0, self._torch.tensor(positions, device=v.device))
        self.optimizers = optimizers
        groups = [o.param_groups[0] for o in optimizers]
        self.hyper = {k: [float(g.get(k, 0.0)) for g in groups] for k in ("momentum", "weight_decay", "eps")}
        self.hyper["nesterov"] = [bool(g.get("nesterov", False)) for g in groups]
        self.betas = [tuple(float(b) for b in g.get("betas", (0.0, 0.0))) for g in groups]
        self._columns: dict[tuple[str, int], Any] = {}

    def _col(self, name: str, values: list[float], like: Any) -> Any:
        """A per-member hyperparameter as a float32 column broadcasting over ``like`` (cached when constant)."""
        key = (name, like.dim())
        col = self._columns.get(key)
        if col is None:
            col = self._torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *[1] * (like.dim() - 1))
            if name in self.CONSTANT:
                self._columns[key] = col
        return col

    def step(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        lrs = [o.param_groups[0]["lr"] for o in self.optimizers]
        self.steps += 1
        if self.kind == "sgd":
            self._sgd(params, grads, lrs)
        else:
            self._adam(params, grads, lrs)

    def _scratch(self, name: str, p: Any) -> tuple[Any, Any]:
        """Two buffers like ``p`` for the temporaries (fresh group-sized tensors cost page faults on every step)."""
        pair = self._buffers.get(name)
        if pair is None or pair[0].shape != p.shape:
            pair = self._buffers[name] = (self._torch.empty_like(p), self._torch.empty_like(p))
        return pair

    def _sgd(self, params: dict[str, Any], grads: dict[str, Any], lrs: list[float]) -> None:
        torch, h = self._torch, self.hyper
        decay, momentum, nesterov = any(h["weight_decay"]), any(h["momentum"]), any(h["nesterov"])
        for name, p in params.items():
            grad, (s1, s2) = grads[name], self._scratch(name, p)
            if decay:  # grad.add(param, alpha=weight_decay); addcmul rounds as add with alpha does (one fma)
                grad = torch.addcmul(grad, self._col("weight_decay", h["weight_decay"], p), p, out=s1)
            if momentum:
                m = self._col("momentum", h["momentum"], p)
                buf = self.state[name].get("momentum_buffer")
                if buf is None:  # the first step: a copy of the gradient
                    buf = self.state[name]["momentum_buffer"] = grad.clone()
                else:  # buf.mul_(momentum).add_(grad): a member without momentum gets 0 * buf + grad = grad
                    buf.mul_(m).add_(grad)
                if nesterov:  # grad.add(buf, alpha=momentum) where nesterov, else buf
                    grad = torch.addcmul(grad, m, buf, out=s2)
                    if not all(h["nesterov"]):
                        flag = self._col("nesterov", [float(n) for n in h["nesterov"]], p)
                        grad = torch.where(flag > 0, s2, buf, out=s2)
                else:
                    grad = buf
            p.addcmul_(self._col("lr", [-lr for lr in lrs], p), grad)  # param.add_(grad, alpha=-lr)

    def _adam(self, params: dict[str, Any], grads: dict[str, Any], lrs: list[float]) -> None:
        torch, h, t = self._torch, self.hyper, self.steps
        decay = any(h["weight_decay"])
        step_size = [lr / (1 - b1**t) for lr, (b1, _) in zip(lrs, self.betas, strict=True)]
        bc2_sqrt = [(1 - b2**t) ** 0.5 for _, b2 in self.betas]
        for name, p in params.items():
            grad, state, (s1, s2) = grads[name], self.state[name], self._scratch(name, p)
            if decay and self.kind == "adamw":  # param.mul_(1 - lr * weight_decay)
                p.mul_(self._col("decay", [1 - lr * wd for lr, wd in zip(lrs, h["weight_decay"], strict=True)], p))
            elif decay:  # grad.add(param, alpha=weight_decay)
                grad = torch.addcmul(grad, self._col("weight_decay", h["weight_decay"], p), p, out=s1)
            if not state:
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, self._col("one_minus_beta1", [1 - b1 for b1, _ in self.betas], p))
            exp_avg_sq.mul_(self._col("beta2", [b2 for _, b2 in self.betas], p))  # .addcmul_(g, g, value=1 - b2)
            exp_avg_sq.addcmul_(torch.mul(self._col("one_minus_beta2", [1 - b2 for _, b2 in self.betas], p), grad,
                                          out=s2), grad)  # fmt: skip
            denom = torch.sqrt(exp_avg_sq, out=s2).div_(self._col("bc2_sqrt", bc2_sqrt, p))
            denom.add_(self._col("eps", h["eps"], p))  # (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            update = torch.mul(self._col("step_size", [-s for s in step_size], p), exp_avg, out=s1)
            p.add_(update.div_(denom))  # param.addcdiv_(exp_avg, denom, value=-step_size)

    def export(self, position: int, named: dict[str, Any], optimizer: Any) -> None:
        """One member's state into its torch.optim optimizer, as torch.optim would hold it after these steps."""
        import torch

        for name, p in named.items():
            slot = self.state.get(name, {})
            if self.kind == "sgd":
                buf = slot.get("momentum_buffer")
                has = buf is not None and self.hyper["momentum"][position]
                optimizer.state[p] = {"momentum_buffer": buf[position].clone() if has else None}
            elif slot:
                optimizer.state[p] = {"step": torch.tensor(float(self.steps)),
                                      "exp_avg": slot["exp_avg"][position].clone(),
                                      "exp_avg_sq": slot["exp_avg_sq"][position].clone()}  # fmt: skip
