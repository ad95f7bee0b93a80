"""Research: planted boxes through a task-dynamics decoder (latent TVs, stiffness-weighted
blending, time-varying stiffness integrated exactly, neutral relaxation, linear + MLP map).

Needs docs/research/task-dynamics-decoder.patch applied (for gestural.model.tv_scan). Run from
the project root after `dvc repro`: STEPS=1000 python docs/research/task_dynamics_ceiling.py
(HEIGHTS=1: a free effort per planted interval; M, HID: tract variables, MLP width). Prints the
variance explained and saves the fitted decoder to $SAVE (task_dynamics_decoder.pt), which the
patch's TADA_INIT= loads, frozen, into a model of num_gestures 14.
"""
import sys, math, json, time, os
import numpy as np, torch
from torch import nn
sys.path.insert(0, "src")
from gestural.data.dataset import NormalizedCorpus
from gestural.evaluation.planted_ceiling import PlantedBoxes
from gestural.core.metrics import reconstruction_metrics
from gestural.synthetic.ground_truth import load_activations
from gestural.model.tv_scan import track
torch.set_num_threads(1); torch.manual_seed(0)
M = int(os.environ.get("M", 6)); HID = int(os.environ.get("HID", 64)); STEPS = int(os.environ.get("STEPS", 800))
corpus = NormalizedCorpus.load("data/normalized")
def boxes(split):
    u = corpus.utterances(split)
    _, a = load_activations("data/raw/ground_truth.npz", corpus.ids(split), [x.shape[1] for x in u])
    return PlantedBoxes.of(u, a)
train, test = boxes("train"), boxes("test")
P, C = train.boxes.shape[1], train.x.shape[1]
DT = 1 / 200

class TaDA(nn.Module):
    def __init__(s):
        super().__init__()
        s.target = nn.Parameter(torch.randn(P, M))
        s.involve = nn.Parameter(torch.zeros(P, M))
        s.log_hz = nn.Parameter(torch.full((P,), math.log(5.0)))
        s.neutral = nn.Parameter(torch.zeros(M)); s.log_nhz = nn.Parameter(torch.tensor(math.log(1.5)))
        s.linear = nn.Conv1d(M, C, 1)
        s.mlp = nn.Sequential(nn.Conv1d(M, HID, 1), nn.Tanh(), nn.Conv1d(HID, HID, 1), nn.Tanh(), nn.Conv1d(HID, C, 1)) if HID else None
        if HID: nn.init.zeros_(s.mlp[-1].weight); nn.init.zeros_(s.mlp[-1].bias)
    def forward(s, a, effort):  # a (N, P, T) in [0,1]; effort (N, P, T) multiplies target - neutral
        inv = torch.sigmoid(s.involve)  # (P, M)
        w2 = (2 * math.pi * s.log_hz.exp()) ** 2  # (P,)
        wn2 = (2 * math.pi * s.log_nhz.exp()) ** 2
        act = torch.einsum("npt,pm->nmt", a, inv)
        weight = torch.einsum("npt,pm->nmt", a * w2[None, :, None], inv)
        tgt = s.neutral[None, :, None, None] + effort[:, None] * (s.target.T[None, :, :, None] - s.neutral[None, :, None, None])  # (N,M,P,T)
        pulled = torch.einsum("nmpt,npt,pm->nmt", tgt, a * w2[None, :, None], inv)
        rest = torch.relu(1 - act)
        W = weight + rest * wn2
        target = (pulled + rest * wn2 * s.neutral[None, :, None]) / W
        omega = torch.sqrt(W / (act + rest).clamp_min(1e-6))
        z = track(target, omega, s.neutral[None, :, None].expand(a.shape[0], M, 1)[..., 0])
        y = s.linear(z)
        return y + s.mlp(z) if HID else y

def fit(model, data, log_e, train_model, steps, lr):
    params = (list(model.parameters()) if train_model else []) + ([log_e] if log_e is not None else [])
    opt = torch.optim.Adam(params, lr=lr); real = data.mask[:, None]
    for i in range(steps):
        opt.zero_grad()
        eff = torch.ones_like(data.boxes) if log_e is None else data.boxes * log_e.exp()[data.interval] + (1 - data.boxes)
        err = (model(data.boxes, eff) - data.x) * real
        loss = err.square().sum() / real.sum(); loss.backward(); opt.step()
        if i % 100 == 0: print(i, round(loss.item(), 5), time.strftime("%X"), flush=True)

def ve(model, data, log_e):
    with torch.no_grad():
        eff = torch.ones_like(data.boxes) if log_e is None else data.boxes * log_e.exp()[data.interval] + (1 - data.boxes)
        return reconstruction_metrics(data.x, model(data.boxes, eff), data.mask)["variance_explained"]

HEIGHTS = bool(int(os.environ.get("HEIGHTS", 0)))
model = TaDA()
with torch.no_grad(): model.linear.bias.copy_(train.x.permute(1, 0, 2)[:, train.mask > 0].median(dim=1).values)
le_tr = torch.zeros(train.intervals, requires_grad=True) if HEIGHTS else None
fit(model, train, le_tr, True, STEPS, 0.01)
le_te = torch.zeros(test.intervals, requires_grad=True) if HEIGHTS else None
if HEIGHTS: fit(model, test, le_te, False, STEPS // 3, 0.03)
torch.save(model.state_dict(), os.environ.get("SAVE", "task_dynamics_decoder.pt"))
print(json.dumps({"M": M, "hidden": HID, "heights": HEIGHTS, "train_ve": ve(model, train, le_tr), "test_ve": ve(model, test, le_te),
                  "hz": [round(h, 2) for h in model.log_hz.exp().tolist()], "neutral_hz": model.log_nhz.exp().item()}))
