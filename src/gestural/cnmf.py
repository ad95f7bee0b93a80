"""Classical convolutive NMF (NMFD / seqNMF multiplicative updates), in torch.

The baseline the auto-encoder is compared with. It fits the same model,

    X_hat[c, t] = b[c] + sum_k sum_tau W[k, c, tau] * H[k, t - tau],   W, H, b >= 0,

by minimising ``0.5 * ||X - X_hat||^2`` over the real frames, plus optional penalties
``lambda_l1_scores * ||H||_1 + lambda_l1_kernels * ||W||_1`` and seqNMF's x-ortho penalty
``lambda_xortho * sum_{i != j} [(W^T * X) S H^T]_ij`` (S: a box filter 2L - 1 frames wide),
with Lee & Seung style multiplicative updates (Smaragdis 2004; Mackevicius et al. 2019).

Why the updates keep the cost from rising (no penalties): the model is linear in each of
H, W and b with non-negative coefficients (for W: X_hat = [W_0 .. W_L-1] [H shifted by 0 ..
L-1 frames], an ordinary NMF), so each update is the minimiser of Lee & Seung's auxiliary
function for that block, and the other blocks (b included, being non-negative) only enlarge
the majorising diagonal. Rescaling each kernel to unit norm and its scores inversely leaves
X_hat, hence the Euclidean cost, unchanged. With penalties the L1 terms change under that
rescaling, and the x-ortho update is a heuristic, so there the cost is only recorded.

Utterances are laid end to end with ``win_size - 1`` frames between them that are masked out
of the cost and where the scores are held at zero (a zero stays zero under multiplicative
updates): a gesture of one utterance never reaches into the next, exactly as if each were
factorised alone, and all of them go through a few long convolutions (fast on a GPU).

The baseline b is an extra factor whose activation is 1 on every real frame: initialised to
each channel's 5th percentile and updated multiplicatively like the others during ``fit``;
``transform`` keeps it fixed, like the kernels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ConvNMF"]

_EPS = 1e-12  # keeps 0/0 at 0 in the updates; far below any value that matters


def _box_filter(signal: torch.Tensor, half_width: int) -> torch.Tensor:
    """Sum of each row of ``signal`` (R, N) over a centred window of 2 * half_width + 1 frames."""
    if half_width == 0:
        return signal
    ones = signal.new_ones(1, 1, 2 * half_width + 1)
    return F.conv1d(signal[:, None, :], ones, padding=half_width)[:, 0, :]


class _Layout:
    """Utterances laid end to end on one time axis, separated by masked gaps."""

    def __init__(self, utterances: list[torch.Tensor], win_size: int, device: torch.device):
        gap = win_size - 1
        self.lengths = [u.shape[1] for u in utterances]
        self.starts = []
        position = 0
        for length in self.lengths:
            self.starts.append(position)
            position += length + gap
        total = position - gap
        channels = utterances[0].shape[0]
        self.data = torch.zeros(channels, total, dtype=torch.float32, device=device)
        self.real = torch.zeros(total, dtype=torch.bool, device=device)
        self.utterance = torch.full((total,), -1, dtype=torch.int64, device=device)  # -1 on gaps
        for index, (start, utterance) in enumerate(zip(self.starts, utterances)):
            self.data[:, start:start + utterance.shape[1]] = utterance.to(device)
            self.real[start:start + utterance.shape[1]] = True
            self.utterance[start:start + utterance.shape[1]] = index

    def split(self, scores: torch.Tensor) -> list[np.ndarray]:
        """(K, N) scores -> list of (K, T_i) numpy arrays, one per utterance."""
        cpu = scores.detach().cpu().numpy()
        return [cpu[:, s:s + n].copy() for s, n in zip(self.starts, self.lengths)]


class ConvNMF:
    """Convolutive non-negative matrix factorisation by multiplicative updates.

    Parameters
    ----------
    num_gestures : int
        Number of gesture kernels K (>= 1).
    win_size : int
        Kernel length L in frames (>= 1).
    max_iter : int
        Maximum number of iterations of ``fit`` (and default for ``transform``).
    tol : float
        Stop when the cost changes by less than ``tol`` times its value in one iteration;
        0 runs all ``max_iter`` iterations.
    lambda_l1_scores, lambda_l1_kernels : float
        L1 penalties on H and W (>= 0).
    lambda_xortho : float
        seqNMF cross-orthogonality penalty (>= 0): discourages two gestures from explaining
        the same stretch of data at nearby times.
    seed : int
        Seed of the random initialisation (drawn on the CPU, so the same on any device).
    device : str or torch.device
        Where the updates run ("cpu", "cuda", ...).
    verbose : bool
        Print the cost every 10 iterations.

    Attributes
    ----------
    gesture_kernels_ : ndarray, (K, C, L)
        Learned kernels, each of unit Frobenius norm, natural time order (reconstruct with
        ``gestural.metrics.convolve_scores(scores, gesture_kernels_, baseline_)``).
    baseline_ : ndarray, (C,)
        Learned per-channel baseline.
    cost_history_ : list of float
        Cost after each iteration of ``fit``.
    n_iter_ : int
        Iterations run by ``fit``.
    transform_cost_history_ : list of float
        Cost after each iteration of the last ``transform``.
    """

    def __init__(self, num_gestures: int, win_size: int, *, max_iter: int = 200, tol: float = 1e-4,
                 lambda_l1_scores: float = 0.0, lambda_l1_kernels: float = 0.0, lambda_xortho: float = 0.0,
                 seed: int = 0, device="cpu", verbose: bool = False):
        def need(ok: bool, name: str, what: str, value) -> None:
            if not ok:
                raise ValueError(f"ConvNMF {name}: {what} (got {value!r})")

        need(isinstance(num_gestures, (int, np.integer)) and num_gestures >= 1, "num_gestures",
             "must be an integer >= 1", num_gestures)
        need(isinstance(win_size, (int, np.integer)) and win_size >= 1, "win_size", "must be an integer >= 1",
             win_size)
        need(isinstance(max_iter, (int, np.integer)) and max_iter >= 1, "max_iter", "must be an integer >= 1",
             max_iter)
        for name, value in (("tol", tol), ("lambda_l1_scores", lambda_l1_scores),
                            ("lambda_l1_kernels", lambda_l1_kernels), ("lambda_xortho", lambda_xortho)):
            need(isinstance(value, (int, float, np.number)) and math.isfinite(value) and value >= 0, name,
                 "must be a finite number >= 0", value)
        self.num_gestures = int(num_gestures)
        self.win_size = int(win_size)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.lambda_l1_scores = float(lambda_l1_scores)
        self.lambda_l1_kernels = float(lambda_l1_kernels)
        self.lambda_xortho = float(lambda_xortho)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.verbose = bool(verbose)

    # ------------------------------------------------------------------ public API

    def fit(self, x_list: Sequence) -> "ConvNMF":
        """Learn gesture kernels and baseline from training utterances.

        Parameters
        ----------
        x_list : list of array or tensor, each (C, T_i), non-negative
            Training utterances (same C for all).

        Returns
        -------
        self
        """
        self._fit(x_list)
        return self

    def fit_transform(self, x_list: Sequence) -> list[np.ndarray]:
        """Fit, and return the scores found for the training utterances.

        Returns
        -------
        list of ndarray, each (K, T_i)
        """
        layout, scores = self._fit(x_list)
        return layout.split(scores)

    def transform(self, x_list: Sequence, max_iter: int | None = None) -> list[np.ndarray]:
        """Find the scores of utterances with the learned kernels and baseline held fixed.

        Parameters
        ----------
        x_list : list of array or tensor, each (C, T_i), non-negative
        max_iter : int, optional
            Iterations of score updates (default: the ``max_iter`` given at construction).

        Returns
        -------
        list of ndarray, each (K, T_i)
        """
        if not hasattr(self, "gesture_kernels_"):
            raise RuntimeError("ConvNMF.transform: call fit first")
        max_iter = self.max_iter if max_iter is None else max_iter
        if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"ConvNMF transform max_iter: must be an integer >= 1 (got {max_iter!r})")
        utterances = self._check_utterances(x_list, self.gesture_kernels_.shape[1])
        layout = _Layout(utterances, self.win_size, self.device)
        kernels = torch.as_tensor(self.gesture_kernels_, device=self.device)
        baseline = torch.as_tensor(self.baseline_, device=self.device)
        generator = torch.Generator().manual_seed(self.seed + 1)
        scores = self._initial_scores(layout, kernels, baseline, generator)
        _, scores, _, history = self._updates(layout, kernels, scores, baseline, int(max_iter),
                                              update_model=False)
        self.transform_cost_history_ = history
        return layout.split(scores)

    # ------------------------------------------------------------------- internals

    @staticmethod
    def _check_utterances(x_list, channels: int | None) -> list[torch.Tensor]:
        if isinstance(x_list, (np.ndarray, torch.Tensor)) or not isinstance(x_list, Sequence):
            raise TypeError("ConvNMF: expected a list of (C, T) utterances; wrap a single one in a list")
        if len(x_list) == 0:
            raise ValueError("ConvNMF: no utterances given")
        utterances = []
        for i, x in enumerate(x_list):
            try:
                tensor = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
            except (TypeError, ValueError) as error:
                raise ValueError(f"ConvNMF: utterance {i} is not a numeric array ({error})") from None
            tensor = tensor.to(torch.float32)
            if tensor.dim() != 2 or tensor.shape[1] < 1:
                raise ValueError(f"ConvNMF: utterance {i} must be a (C, T) array with T >= 1, "
                                 f"got shape {tuple(tensor.shape)}")
            if channels is None:
                channels = tensor.shape[0]
            if tensor.shape[0] != channels:
                raise ValueError(f"ConvNMF: utterance {i} has {tensor.shape[0]} channels, expected {channels}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"ConvNMF: utterance {i} contains NaN or infinite values")
            if (tensor < 0).any():
                raise ValueError(f"ConvNMF: utterance {i} has negative values (min {tensor.min().item():.4g}); "
                                 "NMF needs non-negative data")
            utterances.append(tensor)
        return utterances

    def _fit(self, x_list):
        utterances = self._check_utterances(x_list, None)
        layout = _Layout(utterances, self.win_size, self.device)
        channels = layout.data.shape[0]
        generator = torch.Generator().manual_seed(self.seed)

        kernels = torch.rand(self.num_gestures, channels, self.win_size, generator=generator)
        kernels = (kernels / kernels.flatten(1).norm(dim=1)[:, None, None]).to(self.device)
        real_values = layout.data[:, layout.real]
        # A low percentile, not the minimum: with data normalised to [0, 1] the minimum is
        # often exactly 0, and a multiplicative update can never move a zero.
        rank = max(1, int(0.05 * real_values.shape[1]))
        baseline = real_values.kthvalue(rank, dim=1).values
        baseline = baseline.clamp_min(1e-3 * real_values.mean().item() + 1e-6)
        scores = self._initial_scores(layout, kernels, baseline, generator)

        kernels, scores, baseline, history = self._updates(layout, kernels, scores, baseline, self.max_iter,
                                                           update_model=True)
        self.gesture_kernels_ = kernels.cpu().numpy()
        self.baseline_ = baseline.cpu().numpy()
        self.cost_history_ = history
        self.n_iter_ = len(history)
        return layout, scores

    def _initial_scores(self, layout: _Layout, kernels, baseline, generator) -> torch.Tensor:
        """Uniform random scores on real frames, scaled per utterance to fit its data.

        The scale is the least-squares factor between the random model and the data above
        the baseline, computed for each utterance alone, so that no utterance's start
        depends on the others (with W fixed, each utterance's scores are then found exactly
        as if it were transformed alone).
        """
        frames = layout.data.shape[1]
        scores = torch.rand(self.num_gestures, frames, generator=generator).to(self.device) * layout.real
        model = self._convolve(scores, kernels)
        target = (layout.data - baseline[:, None]).clamp_min(0.0)
        real = layout.real
        cross = torch.zeros(len(layout.lengths), dtype=torch.float64, device=self.device)
        power = torch.zeros_like(cross)
        cross.index_add_(0, layout.utterance[real], (model * target).sum(dim=0)[real].double())
        power.index_add_(0, layout.utterance[real], (model * model).sum(dim=0)[real].double())
        scale = (cross / power.clamp_min(_EPS)).clamp_min(1e-3).to(scores.dtype)
        return scores * scale[layout.utterance.clamp_min(0)][None, :]

    @staticmethod
    def _convolve(scores: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """(K, N) scores, (K, C, L) kernels -> (C, N): the forward-in-time convolution."""
        return F.conv_transpose1d(scores[None], kernels)[0, :, :scores.shape[1]]

    @staticmethod
    def _correlate(signals: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Adjoint of ``_convolve``: (S, C, N) -> (S, K, N), sum_{c,tau} W[k,c,tau] Y[c,t+tau]."""
        return F.conv1d(F.pad(signals, (0, kernels.shape[-1] - 1)), kernels)

    def _cost(self, data, reconstruction, real, kernels, scores) -> float:
        residual = (data - reconstruction) * real
        cost = 0.5 * (residual.double() ** 2).sum().item()
        if self.lambda_l1_scores:
            cost += self.lambda_l1_scores * scores.double().sum().item()
        if self.lambda_l1_kernels:
            cost += self.lambda_l1_kernels * kernels.double().sum().item()
        if self.lambda_xortho:
            overlap = _box_filter(self._correlate(data[None], kernels)[0] * real, self.win_size - 1) @ scores.T
            cost += self.lambda_xortho * (overlap.sum() - overlap.diagonal().sum()).item()
        return cost

    def _updates(self, layout: _Layout, kernels, scores, baseline, max_iter: int, update_model: bool):
        """Multiplicative updates; returns kernels, scores, baseline and the cost per iteration."""
        data = layout.data  # zero on gap frames
        real = layout.real.to(data.dtype)[None, :]  # (1, N)
        win = self.win_size
        frames = data.shape[1]
        smoothed_data = _box_filter(data, win - 1) if (self.lambda_xortho and update_model) else None
        reconstruction = self._convolve(scores, kernels) + baseline[:, None]
        history: list[float] = []
        for iteration in range(max_iter):
            # --- scores: H <- H * (W^T * X) / (W^T * X_hat + penalties)
            both = self._correlate(torch.stack([data, reconstruction * real]), kernels)
            numerator, denominator = both[0], both[1] + self.lambda_l1_scores
            if self.lambda_xortho:
                smoothed = _box_filter(numerator * real, win - 1)
                # row k gets the smoothed correlation of every *other* gesture: (1 - I) @ .
                denominator = denominator + self.lambda_xortho * (smoothed.sum(dim=0, keepdim=True) - smoothed)
            scores = scores * numerator / (denominator + _EPS) * real
            reconstruction = self._convolve(scores, kernels) + baseline[:, None]

            if update_model:
                # --- kernels: W_tau <- W_tau * (X H_tau^T) / (X_hat H_tau^T + penalties), H_tau
                # being H delayed by tau frames; one (K, N) x (N, S*C) product per tau.
                signals = [data, reconstruction * real] + ([smoothed_data] if smoothed_data is not None else [])
                stacked = torch.cat(signals, dim=0).T  # (N, S*C)
                padded = F.pad(scores, (win - 1, 0))
                products = torch.stack([padded[:, win - 1 - tau: win - 1 - tau + frames] @ stacked
                                        for tau in range(win)], dim=-1)  # (K, S*C, L)
                channels = data.shape[0]
                numerator = products[:, :channels]
                denominator = products[:, channels:2 * channels] + self.lambda_l1_kernels
                if smoothed_data is not None:
                    smoothed = products[:, 2 * channels:]
                    denominator = denominator + self.lambda_xortho * (smoothed.sum(dim=0, keepdim=True) - smoothed)
                kernels = kernels * numerator / (denominator + _EPS)
                reconstruction = self._convolve(scores, kernels) + baseline[:, None]

                # --- baseline: a factor whose activation is 1 on real frames.
                new_baseline = baseline * (data * real).sum(dim=1) / ((reconstruction * real).sum(dim=1) + _EPS)
                reconstruction = reconstruction + (new_baseline - baseline)[:, None]
                baseline = new_baseline

                # --- unit-norm kernels, amplitude in the scores (X_hat unchanged), so that
                # the L1 penalty on H cannot be dodged by growing W.
                norms = kernels.flatten(1).norm(dim=1)
                norms = torch.where(norms > 0, norms, torch.ones_like(norms))
                kernels = kernels / norms[:, None, None]
                scores = scores * norms[:, None]

            cost = self._cost(data, reconstruction, real, kernels, scores)
            history.append(cost)
            if self.verbose and (iteration % 10 == 0 or iteration == max_iter - 1):
                print(f"ConvNMF {'fit' if update_model else 'transform'} iteration {iteration + 1}: cost {cost:.6g}",
                      flush=True)
            if iteration > 0 and self.tol > 0:
                previous = history[-2]
                if abs(previous - cost) <= self.tol * max(abs(previous), 1e-300):
                    break
        return kernels, scores, baseline, history
