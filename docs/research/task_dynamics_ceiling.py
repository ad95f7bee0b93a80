"""Research: how much of the movement the planted boxes explain through a task-dynamics decoder.

The decoder of docs/research/task-dynamics-decoder.patch (latent tract variables, targets
blended by stiffness, time-varying stiffness integrated exactly, relaxation to a neutral
posture, a linear map plus an MLP to the sensors), one gesture per planted gesture, with the
scores fixed to the planted boxes; HEIGHTS=1 adds a free effort per planted interval (the
target pulled toward neutral, as the generator reduces unstressed vowels), fitted on the
held-out utterances too. Needs the patch applied (for gestural.model.tv_scan). Run from the
project root after `dvc repro`:

    STEPS=1000 python docs/research/task_dynamics_ceiling.py

(M: tract variables, HID: MLP width). Prints the variance explained and saves the fitted
decoder to $SAVE (task_dynamics_decoder.pt), which the patch's TADA_INIT= loads, frozen, into
a model of num_gestures 14.
"""

import json
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, "src")
from gestural.core.metrics import reconstruction_metrics  # noqa: E402
from gestural.data.dataset import NormalizedCorpus  # noqa: E402
from gestural.evaluation.planted_ceiling import PlantedBoxes  # noqa: E402
from gestural.model.tv_scan import track  # noqa: E402
from gestural.synthetic.ground_truth import load_activations  # noqa: E402

TRACT_VARIABLES = int(os.environ.get("M", 6))
HIDDEN = int(os.environ.get("HID", 64))
STEPS = int(os.environ.get("STEPS", 800))
HEIGHTS = bool(int(os.environ.get("HEIGHTS", 0)))


class TaskDynamicsDecoder(nn.Module):
    """Scores (N, P, T) in [0, 1] and efforts (N, P, T) -> sensors (N, C, T)."""

    def __init__(self, gestures: int, channels: int):
        super().__init__()
        m = TRACT_VARIABLES
        self.target = nn.Parameter(torch.randn(gestures, m))
        self.involve = nn.Parameter(torch.zeros(gestures, m))
        self.log_hz = nn.Parameter(torch.full((gestures,), math.log(5.0)))
        self.neutral = nn.Parameter(torch.zeros(m))
        self.log_nhz = nn.Parameter(torch.tensor(math.log(1.5)))
        self.linear = nn.Conv1d(m, channels, 1)
        self.mlp = None
        if HIDDEN:
            self.mlp = nn.Sequential(nn.Conv1d(m, HIDDEN, 1), nn.Tanh(), nn.Conv1d(HIDDEN, HIDDEN, 1), nn.Tanh(),
                                     nn.Conv1d(HIDDEN, channels, 1))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, scores: torch.Tensor, effort: torch.Tensor) -> torch.Tensor:
        involve = torch.sigmoid(self.involve)  # (P, M)
        stiffness = (2 * math.pi * self.log_hz.exp()) ** 2  # (P,)
        neutral_stiffness = (2 * math.pi * self.log_nhz.exp()) ** 2
        neutral = self.neutral[None, :, None]
        on = torch.einsum("npt,pm->nmt", scores, involve)
        pull = scores * stiffness[None, :, None]
        weight = torch.einsum("npt,pm->nmt", pull, involve)
        # each interval's target, pulled toward neutral by its effort: (N, M, P, T)
        targets = neutral[..., None] + effort[:, None] * (self.target.T[None, :, :, None] - neutral[..., None])
        pulled = torch.einsum("nmpt,npt,pm->nmt", targets, pull, involve)
        rest = torch.relu(1 - on)
        total = weight + rest * neutral_stiffness
        target = (pulled + rest * neutral_stiffness * neutral) / total
        omega = torch.sqrt(total / (on + rest).clamp_min(1e-6))
        z = track(target, omega, self.neutral[None, :].expand(scores.shape[0], -1))
        y = self.linear(z)
        return y if self.mlp is None else y + self.mlp(z)


def planted_boxes(corpus: NormalizedCorpus, split: str) -> PlantedBoxes:
    utterances = corpus.utterances(split)
    _names, activations = load_activations("data/raw/ground_truth.npz", corpus.ids(split),
                                           [u.shape[1] for u in utterances])
    return PlantedBoxes.of(utterances, activations)


def efforts(data: PlantedBoxes, log_effort: torch.Tensor | None) -> torch.Tensor:
    if log_effort is None:
        return torch.ones_like(data.boxes)
    return data.boxes * log_effort.exp()[data.interval] + (1 - data.boxes)


def fit(decoder: TaskDynamicsDecoder, data: PlantedBoxes, log_effort, train_decoder: bool, steps: int, lr: float):
    parameters = (list(decoder.parameters()) if train_decoder else []) + ([log_effort] if HEIGHTS else [])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    real = data.mask[:, None]
    for step in range(steps):
        optimizer.zero_grad()
        error = (decoder(data.boxes, efforts(data, log_effort)) - data.x) * real
        loss = error.square().sum() / real.sum()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.5f}", flush=True)


def variance_explained(decoder: TaskDynamicsDecoder, data: PlantedBoxes, log_effort) -> float:
    with torch.no_grad():
        fitted = decoder(data.boxes, efforts(data, log_effort))
        return reconstruction_metrics(data.x, fitted, data.mask)["variance_explained"]


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    corpus = NormalizedCorpus.load("data/normalized")
    train, test = planted_boxes(corpus, "train"), planted_boxes(corpus, "test")
    decoder = TaskDynamicsDecoder(train.boxes.shape[1], train.x.shape[1])
    with torch.no_grad():  # start at the median posture
        decoder.linear.bias.copy_(train.x.permute(1, 0, 2)[:, train.mask > 0].median(dim=1).values)
    train_effort = torch.zeros(train.intervals, requires_grad=True) if HEIGHTS else None
    fit(decoder, train, train_effort, True, STEPS, 0.01)
    test_effort = torch.zeros(test.intervals, requires_grad=True) if HEIGHTS else None
    if HEIGHTS:
        fit(decoder, test, test_effort, False, STEPS // 3, 0.03)
    torch.save(decoder.state_dict(), os.environ.get("SAVE", "task_dynamics_decoder.pt"))
    print(json.dumps({"tract_variables": TRACT_VARIABLES, "hidden": HIDDEN, "heights": HEIGHTS,
                      "train_variance_explained": variance_explained(decoder, train, train_effort),
                      "test_variance_explained": variance_explained(decoder, test, test_effort),
                      "hz": [round(h, 2) for h in decoder.log_hz.exp().tolist()],
                      "neutral_hz": round(decoder.log_nhz.exp().item(), 3)}))


if __name__ == "__main__":
    main()
