"""Classical convolutive NMF (NMFD / seqNMF multiplicative updates), in torch.

The baseline the auto-encoder is compared with. It fits the same model,

    X_hat[c, t] = b[c] + sum_k sum_tau W[k, c, tau] * H[k, t - tau],   W, H, b >= 0,

by minimizing ``0.5 * ||X - X_hat||^2`` over the real frames, plus optional penalties
``lambda_l1_scores * ||H||_1 + lambda_l1_kernels * ||W||_1`` and seqNMF's x-ortho penalty
``lambda_xortho / ((K - 1)(2L - 1)) * sum_{i != j} <W_i^T * Y, H_j>`` with Y = S max(X - b, 0)
(S: a box filter 2L - 1 frames wide), by Lee & Seung style multiplicative updates (Smaragdis
2004; Mackevicius et al. 2019). x-ortho differs from seqNMF's ``(W^T * X) S H^T`` because EMA
normalized to [0, 1] is continuous movement on an offset near 0.5, not sparse spikes: on X
itself the offset makes every gesture overlap every other everywhere, and the unscaled sum
over K - 1 gestures and 2L - 1 lags grows with K and L. With seqNMF's form, lambda = 0.001
drove every score to zero within ~10 iterations at K >= 40 (the baseline explained only the
mean, the cost stopped changing, the relative tolerance stopped the fit); now one lambda is
equally strong at any K and L.

Why the updates keep the cost from rising (no penalties): the model is linear in each of
H, W and b with non-negative coefficients (for W: X_hat = [W_0 .. W_L-1] [H shifted by 0 ..
L-1 frames], an ordinary NMF), so each update is the minimizer of Lee & Seung's auxiliary
function for that block, and the other blocks (b included, being non-negative) only enlarge
the majorizing diagonal. Rescaling each kernel to unit norm and its scores inversely leaves
X_hat unchanged. With penalties the L1 terms change under that rescaling, and the x-ortho
update is a heuristic, so there the cost is only recorded.

Stopping: once the cost has fallen, on average over the last 10 iterations, by at most
``tol`` times the cost of a constant fit per iteration (variance explained gained per
iteration), never before 20 iterations. Multiplicative updates crawl at first and keep
improving slowly for hundreds of iterations; one iteration's relative change is no signal.

Utterances are laid end to end with ``win_size - 1`` frames between them that are masked out
of the cost and where the scores are held at zero (a zero stays zero under multiplicative
updates): a gesture of one utterance never reaches into the next, exactly as if each were
factorized alone, and all of them go through a few long convolutions (fast on a GPU).

The baseline b is an extra factor whose activation is 1 on every real frame: initialized to
each channel's 5th percentile and updated multiplicatively during ``fit``; ``transform``
keeps it fixed, like the kernels.

The update steps, the cost and the stopping rule are in :mod:`gestural.classical.updates`; this
module lays the utterances out, initializes the factors and runs the iterations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from gestural.classical.updates import (
    _EPS,
    _convolve,
    _correlate,
    _cost,
    _normalize_kernels,
    _Penalties,
    _smoothed_above,
    _stopped,
    _update_baseline,
    _update_kernels,
    _update_scores,
    _xortho_term,
)

__all__ = ["ConvNMF"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------ layout


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
        # Cost of the best constant per channel: the scale of the stopping rule's tolerance,
        # which thereby reads as variance explained gained per iteration.
        values = self.data[:, self.real].double()
        self.spread = 0.5 * ((values - values.mean(dim=1, keepdim=True)) ** 2).sum().item()

    def split(self, scores: torch.Tensor) -> list[np.ndarray]:
        """(K, N) scores -> list of (K, T_i) numpy arrays, one per utterance."""
        cpu = scores.detach().cpu().numpy()
        return [cpu[:, s:s + n].copy() for s, n in zip(self.starts, self.lengths)]


# ------------------------------------------------------------------------- model


class ConvNMF:
    """Convolutive non-negative matrix factorization by multiplicative updates.

    Parameters
    ----------
    num_gestures : int
        Number of gesture kernels K (>= 1).
    win_size : int
        Kernel length L in frames (>= 1).
    max_iter : int
        Maximum number of iterations of ``fit``.
    tol : float
        Stop once the cost has fallen by at most ``tol`` times that of the best per-channel
        constant per iteration, averaged over the last 10 iterations (so ``tol`` is variance
        explained gained per iteration; never before 20 iterations); 0 runs all ``max_iter``.
    transform_max_iter, transform_tol : int, float, optional
        The same for ``transform`` (default: ``max_iter`` and ``tol``).
    lambda_l1_scores, lambda_l1_kernels : float
        L1 penalties on H and W (>= 0).
    lambda_xortho : float
        Cross-orthogonality penalty (>= 0): discourages two gestures from explaining the same
        stretch of data at nearby times. Divided by (K - 1)(2L - 1) (see the module notes), so
        one value is equally strong at any K and L; near 1 it rivals the reconstruction term.
    seed : int
        Seed of the random initialization (drawn on the CPU, so the same on any device).
    device : str or torch.device
        Where the updates run ("cpu", "cuda", ...).
    verbose : bool
        Log the cost every 10 iterations at INFO level (DEBUG otherwise).

    Attributes
    ----------
    gesture_kernels_ : ndarray, (K, C, L)
        Learned kernels, each of unit Frobenius norm, natural time order (reconstruct with
        ``gestural.metrics.convolve_scores(scores, gesture_kernels_, baseline_)``).
    baseline_ : ndarray, (C,)
        Learned per-channel baseline.
    n_iter_ : int
        Iterations run by ``fit``.
    converged_ : bool
        Whether ``fit`` stopped on ``tol`` (False: it ran out of ``max_iter``).
    cost_history_ : list of float
        Cost after each iteration of ``fit``.
    transform_n_iter_, transform_converged_, transform_cost_history_
        The same for the last ``transform``.
    """

    def __init__(self, num_gestures: int, win_size: int, *, max_iter: int = 500, tol: float = 1e-4,
                 transform_max_iter: int | None = None, transform_tol: float | None = None,
                 lambda_l1_scores: float = 0.0, lambda_l1_kernels: float = 0.0, lambda_xortho: float = 0.0,
                 seed: int = 0, device="cpu", verbose: bool = False):
        for name, value in (("num_gestures", num_gestures), ("win_size", win_size), ("max_iter", max_iter),
                            ("transform_max_iter", transform_max_iter)):
            if value is not None:
                _need_count(value, name)
        for name, value in (("tol", tol), ("transform_tol", transform_tol), ("lambda_l1_scores", lambda_l1_scores),
                            ("lambda_l1_kernels", lambda_l1_kernels), ("lambda_xortho", lambda_xortho)):
            if value is not None:
                _need_non_negative(value, name)
        self.num_gestures = int(num_gestures)
        self.win_size = int(win_size)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.transform_max_iter = self.max_iter if transform_max_iter is None else int(transform_max_iter)
        self.transform_tol = self.tol if transform_tol is None else float(transform_tol)
        self.lambda_l1_scores = float(lambda_l1_scores)
        self.lambda_l1_kernels = float(lambda_l1_kernels)
        self.lambda_xortho = float(lambda_xortho)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.verbose = bool(verbose)

    # ------------------------------------------------------------------ public API

    def fit(self, x_list: Sequence) -> ConvNMF:
        """Learn gesture kernels and baseline from training utterances ``x_list``: a list of
        non-negative (C, T_i) arrays or tensors (same C for all). Returns self."""
        self._fit(x_list)
        return self

    def fit_transform(self, x_list: Sequence) -> list[np.ndarray]:
        """Fit, and return the scores found for the training utterances: (K, T_i) arrays."""
        layout, scores = self._fit(x_list)
        return layout.split(scores)

    def transform(self, x_list: Sequence, max_iter: int | None = None, tol: float | None = None) -> list[np.ndarray]:
        """Find the scores of utterances with the learned kernels and baseline held fixed.

        Parameters
        ----------
        x_list : list of array or tensor, each (C, T_i), non-negative
        max_iter, tol : optional
            Iterations of score updates (at most) and stopping tolerance (default:
            ``transform_max_iter`` and ``transform_tol``).

        Returns
        -------
        list of ndarray, each (K, T_i)
        """
        if not hasattr(self, "gesture_kernels_"):
            raise RuntimeError("ConvNMF.transform: call fit first")
        max_iter = self.transform_max_iter if max_iter is None else max_iter
        tol = self.transform_tol if tol is None else tol
        _need_count(max_iter, "transform max_iter")
        _need_non_negative(tol, "transform tol")
        utterances = self._check_utterances(x_list, self.gesture_kernels_.shape[1])
        layout = _Layout(utterances, self.win_size, self.device)
        kernels = torch.as_tensor(self.gesture_kernels_, device=self.device)
        baseline = torch.as_tensor(self.baseline_, device=self.device)
        generator = torch.Generator().manual_seed(self.seed + 1)
        scores = self._initial_scores(layout, kernels, baseline, generator)
        _, scores, _, history, converged = self._iterate(layout, kernels, scores, baseline, int(max_iter),
                                                         float(tol), update_model=False)
        self.transform_cost_history_ = history
        self.transform_n_iter_ = len(history)
        self.transform_converged_ = converged
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
        generator = torch.Generator().manual_seed(self.seed)
        real_values = layout.data[:, layout.real]
        # A low percentile, not the minimum: with data normalized to [0, 1] the minimum is
        # often exactly 0, and a multiplicative update can never move a zero.
        rank = max(1, int(0.05 * real_values.shape[1]))
        baseline = real_values.kthvalue(rank, dim=1).values
        baseline = baseline.clamp_min(1e-3 * real_values.mean().item() + 1e-6)
        # Uniform random kernels: windows of the data start faster but were worse after 100+
        # iterations on articulatory data, and the stopping rule waits out the slow start.
        kernels = torch.rand(self.num_gestures, layout.data.shape[0], self.win_size, generator=generator)
        kernels = (kernels / kernels.flatten(1).norm(dim=1)[:, None, None]).to(self.device)
        scores = self._initial_scores(layout, kernels, baseline, generator)
        kernels, scores, baseline, history, converged = self._iterate(layout, kernels, scores, baseline,
                                                                      self.max_iter, self.tol, update_model=True)
        self.gesture_kernels_ = kernels.cpu().numpy()
        self.baseline_ = baseline.cpu().numpy()
        self.cost_history_ = history
        self.n_iter_ = len(history)
        self.converged_ = converged
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
        model = _convolve(scores, kernels)
        target = (layout.data - baseline[:, None]).clamp_min(0.0)
        real = layout.real
        cross = torch.zeros(len(layout.lengths), dtype=torch.float64, device=self.device)
        power = torch.zeros_like(cross)
        cross.index_add_(0, layout.utterance[real], (model * target).sum(dim=0)[real].double())
        power.index_add_(0, layout.utterance[real], (model * model).sum(dim=0)[real].double())
        scale = (cross / power.clamp_min(_EPS)).clamp_min(1e-3).to(scores.dtype)
        return scores * scale[layout.utterance.clamp_min(0)][None, :]

    def _penalties(self) -> _Penalties:
        pairs = max(1, (self.num_gestures - 1) * (2 * self.win_size - 1))
        return _Penalties(self.lambda_l1_scores, self.lambda_l1_kernels, self.lambda_xortho / pairs,
                          self.win_size - 1)

    def _iterate(self, layout: _Layout, kernels, scores, baseline, max_iter: int, tol: float, update_model: bool):
        """Multiplicative updates until ``_stopped`` or ``max_iter``.

        Returns kernels, scores, baseline, the cost after each iteration, and whether it converged.
        """
        data = layout.data  # zero on gap frames
        real = layout.real.to(data.dtype)[None, :]  # (1, N)
        penalties = self._penalties()
        xortho = bool(penalties.xortho)
        what = "fit" if update_model else "transform"
        say = logger.info if self.verbose else logger.debug

        def correlations(kernels, baseline):
            """W^T X, and with x-ortho Y (:func:`_smoothed_above`) and the x-ortho term, from one convolution."""
            if not xortho:
                return _correlate(data[None], kernels)[0], None, None
            smoothed = _smoothed_above(data, baseline, real, penalties.half_width)
            both = _correlate(torch.stack([data, smoothed]), kernels)
            return both[0], smoothed, _xortho_term(both[1], penalties)

        data_corr, smoothed, xortho_term = correlations(kernels, baseline)
        reconstruction = _convolve(scores, kernels) + baseline[:, None]
        history: list[float] = []
        converged = False
        for iteration in range(max_iter):
            scores = _update_scores(scores, kernels, data_corr, reconstruction, real, penalties, xortho_term)
            reconstruction = _convolve(scores, kernels) + baseline[:, None]
            if update_model:
                kernels = _update_kernels(kernels, scores, data, reconstruction, real, penalties, smoothed)
                reconstruction = _convolve(scores, kernels) + baseline[:, None]
                new_baseline = _update_baseline(baseline, data, reconstruction, real)
                reconstruction += (new_baseline - baseline)[:, None]
                baseline = new_baseline
                kernels, scores = _normalize_kernels(kernels, scores)
                data_corr, smoothed, xortho_term = correlations(kernels, baseline)
            history.append(_cost(data, reconstruction, real, kernels, scores, penalties, xortho_term))
            if iteration % 10 == 0 or iteration == max_iter - 1:
                say("ConvNMF %s iteration %d: cost %.6g", what, iteration + 1, history[-1])
            if _stopped(history, tol, layout.spread):
                converged = True
                break
        if tol > 0 and not converged:
            logger.warning("ConvNMF %s did not converge in %d iterations (tol %g): raise max_iter", what,
                           max_iter, tol)
        return kernels, scores, baseline, history, converged


def _need_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"ConvNMF {name}: must be an integer >= 1 (got {value!r})")


def _need_non_negative(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"ConvNMF {name}: must be a finite number >= 0 (got {value!r})")
