"""The training optimizer (``train.optimizer``): AdamW, or Muon for the weight matrices.

``adamw``: AdamW over every parameter at ``train.lr``.

``muon``: ``torch.optim.Muon`` (momentum, then the update orthogonalized by Newton-Schulz
iterations) for the weight matrices, the encoder's convolutions
(:class:`gestural.model.network.MatrixConv1d`) and the gesture kernels (K x C*L), at
``train.muon_lr``; AdamW at ``train.lr`` for the rest (biases, baseline, the VAE's prior and
noise scales; the response rates as below), as Muon's authors pair them. Its updates are not scaled per
coordinate by a running gradient variance, so they stay large when a large batch has made the
gradient less noisy: at batch 256 and the frames of batch 16 (148 steps), with
``response_lr`` 0.04 and a 15 % warm-up, it learns both synthetic corpora about as well as
AdamW does at batch 16 (README, Performance).

Either way the gestures' response rates (``GestureDecoder.log_rate``) form their own AdamW
group at ``train.response_lr`` (null: ``train.lr``). AdamW moves a parameter by about its
learning rate per step whatever the gradient, and a rate starts at 5 Hz and may have to travel
far (to an impulse on the events corpus: log 6.4 / 0.6 = 2.4): with 16 times fewer steps it
needs about 16 times the learning rate to get there (batch 256: 0.04). Every AdamW parameter
at that rate fitted worse (events corpus, batch 256: variance explained 0.956 against 0.972).

Both keep one list of parameter groups, AdamW's first, so that the learning-rate schedule
moves every group and ``param_groups[0]["lr"]`` is ``train.lr``'s current value.
"""

from __future__ import annotations

import torch
from torch import nn

from gestural.model.network import GestureDecoder, MatrixConv1d

OPTIMIZERS = ("adamw", "muon")


def build_optimizer(model: nn.Module, name: str, lr: float, muon_lr: float, response_lr: float | None,
                    weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` (one of OPTIMIZERS) over ``model``'s parameters."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {name!r}")
    matrices = []
    if name == "muon":
        matrices = [module.weight for module in model.modules() if isinstance(module, MatrixConv1d)]
        matrices += [module.kernel_matrix for module in model.modules() if isinstance(module, GestureDecoder)]
    rates = [module.log_rate for module in model.modules()
             if isinstance(module, GestureDecoder) and module.log_rate is not None]
    chosen = {id(p) for p in matrices + rates}
    adamw_groups = [{"params": [p for p in model.parameters() if id(p) not in chosen], "lr": lr}]
    if rates:
        adamw_groups.append({"params": rates, "lr": lr if response_lr is None else response_lr})
    if name == "adamw":
        return torch.optim.AdamW(adamw_groups, lr=lr, weight_decay=weight_decay)
    return MuonWithAdamW(matrices, adamw_groups, lr=lr, muon_lr=muon_lr, weight_decay=weight_decay)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for ``matrices``, AdamW for ``rest`` (parameters or parameter groups), as one optimizer.

    torch has no optimizer that applies Muon to some parameters and AdamW to the others, and
    a training loop, its LR scheduler and its checkpoint expect one. This holds the two and
    shares their parameter-group dicts, so a scheduler that sets a group's ``lr`` sets it
    where the inner optimizer reads it.
    """

    def __init__(self, matrices: list[nn.Parameter], rest: list, *, lr: float, muon_lr: float,
                 weight_decay: float):
        self.adamw = torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay)
        # match_rms_adamw: Muon's update is scaled to the RMS of an AdamW update, so muon_lr
        # is on the scale of an AdamW learning rate.
        self.muon = torch.optim.Muon(matrices, lr=muon_lr, weight_decay=weight_decay,
                                     adjust_lr_fn="match_rms_adamw")
        super().__init__(self.adamw.param_groups + self.muon.param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        self.adamw.step()
        self.muon.step()

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.adamw.load_state_dict(state_dict["adamw"])
        self.muon.load_state_dict(state_dict["muon"])
        # Loading gives the inner optimizers new group dicts: share those.
        self.param_groups = self.adamw.param_groups + self.muon.param_groups
