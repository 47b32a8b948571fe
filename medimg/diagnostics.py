"""Measurements that explain a run rather than score it, stored in its results.json so
that the report's "why" rests on numbers: how strongly each block of a freshly
initialised network is trained (gradient norms), and how many ReLU units have died."""
from typing import Callable, Optional

import torch

from medimg.execution import Execution


def block_gradient_norms(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, loss_fn: Callable,
                         execution: Execution) -> dict[str, float]:
    """The L2 norm of the loss gradient of each top-level block's parameters, for one
    fixed batch (uint8 ``images [B, 3, H, W]``, ``masks [B, 1, H, W]``), in eval mode and
    without an optimizer step: the model, its gradients and every random stream are left
    as they were. Returns ``{block name: norm}`` in the order of the forward pass."""
    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    with execution.autocast():
        logits = model(execution.to_input(images.float() / 255.0))
    loss = loss_fn(logits.float(), masks.float().to(execution.device))
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    model.train(was_training)
    norms = {}
    for (name, _), grad in zip(params.items(), grads):
        parts = name.split(".")
        block = ".".join(parts[:2]) if parts[0] == "net" else parts[0]  # smp models sit under Normalized.net
        if grad is not None:
            norms[block] = norms.get(block, 0.0) + float(grad.float().pow(2).sum())
    return {block: value ** 0.5 for block, value in norms.items()}


@torch.no_grad()
def dead_relu_fraction(model: torch.nn.Module, images: torch.Tensor, execution: Execution) -> Optional[dict]:
    """The fraction of ReLU channels (``nn.ReLU`` modules) whose output is zero at every
    pixel of every one of ``images`` (uint8 ``[N, 3, H, W]``): units that no longer pass
    any signal or gradient. Returns ``{"overall": f, "per_layer": {name: f}}``, or None
    when the model has no ``nn.ReLU``."""
    alive, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ReLU):
            def record(module, inputs, output, name=name):
                active = output.detach().float().amax(dim=(0, 2, 3)) > 0 if output.dim() == 4 \
                    else output.detach().float().amax(dim=0) > 0
                alive[name] = alive[name] | active if name in alive else active
            hooks.append(module.register_forward_hook(record))
    if not hooks:
        return None
    model.eval()
    try:
        for image in images:
            with execution.autocast():
                model(execution.to_input(image[None].float() / 255.0))
    finally:
        for hook in hooks:
            hook.remove()
    per_layer = {name: 1.0 - float(a.float().mean()) for name, a in alive.items()}
    total = sum(a.numel() for a in alive.values())
    dead = sum(int((~a).sum()) for a in alive.values())
    return {"overall": dead / total, "per_layer": per_layer}
