"""Figures: right panels for any number of gestures, numbers drawn where they belong, no layout warnings."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import model_config, train_config

from gestural.core import units
from gestural.data import ema
from gestural.data.scaling import to_corpus_units
from gestural.evaluation.files import read_channel_correlation
from gestural.figures.curves import channel_correlation_figure, learning_curves_figure
from gestural.figures.kinematics import (
    gesture_paths_figure,
    gesture_traces_figure,
    neural_vs_classical_figure,
    planted_vs_learned_figure,
    reconstruction_figure,
)
from gestural.figures.scores import score_heatmap_figure
from gestural.figures.style import (
    ARTICULATOR_COLOURS,
    CHANNEL_LABELS,
    message_figure,
    rank_gestures,
    save_figure,
)
from gestural.figures.summary import (
    FIGURES,
    FigureInputError,
    FigureInputs,
    PlotParams,
    make_figures,
)
from gestural.model.file import save_model
from gestural.model.network import GesturalAutoEncoder

RNG = np.random.default_rng(0)
FRAMES = 120
LENGTH = 5


def kernels(num_gestures: int, length: int = LENGTH) -> np.ndarray:
    w = RNG.uniform(0.0, 1.0, (num_gestures, 12, length))
    return w / np.linalg.norm(w.reshape(num_gestures, -1), axis=1)[:, None, None]


def spiky_scores(num_gestures: int, frames: int = FRAMES, active: int | None = None) -> np.ndarray:
    """Scores with a few spikes in the first ``active`` gestures (default all)."""
    h = np.zeros((num_gestures, frames))
    for k in range(num_gestures if active is None else active):
        h[k, RNG.integers(0, frames, 3)] = RNG.uniform(0.2, 1.0, 3)
    return h


def render(figure, draw: bool = True) -> None:
    """Draw the figure (the constrained layout runs only then) and fail on any warning.

    Drawing a figure of many panels takes most of a second; ``draw=False`` skips it where
    a larger and a smaller case of the same figure are drawn anyway.
    """
    if not draw:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure.savefig(io.BytesIO(), format="png", dpi=30)


def titles(figure) -> list[str]:
    return [ax.get_title(loc) for ax in figure.axes for loc in ("left", "center") if ax.get_title(loc)]


X = np.clip(0.5 + 0.2 * np.sin(np.linspace(0, 6, FRAMES))[None] + 0.01 * RNG.standard_normal((12, FRAMES)), 0, 1)
PHONES = [(0.1, "sil"), (0.2, "p"), (0.25, "a"), (0.6, "sil")]


# ------------------------------------------------------------------------- pure figures


def test_reconstruction_figure_has_a_labelled_panel_per_channel():
    figure = reconstruction_figure(X, X * 0.9, title="utt")
    render(figure)
    assert len(figure.axes) == 12
    assert titles(figure) == list(CHANNEL_LABELS)
    assert figure.axes[-1].get_xlabel() == "time (s)"
    # Time axis in seconds at 200 Hz; the reconstruction keeps its channel's colour and style.
    ax = figure.axes[3]  # tongue blade y
    original, reconstruction = ax.lines
    assert original.get_xdata()[-1] == pytest.approx((FRAMES - 1) / 200)
    np.testing.assert_allclose(reconstruction.get_ydata(), X[3] * 0.9)
    assert reconstruction.get_color() == ARTICULATOR_COLOURS[1] and reconstruction.get_linestyle() == "--"


def test_reconstruction_figure_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="x_hat"):
        reconstruction_figure(X, X[:, :-1])
    with pytest.raises(ValueError, match="12 channels"):
        reconstruction_figure(X[:6], X[:6])


@pytest.mark.parametrize("num_gestures, panels", [(1, 1), (3, 3), (100, 16)])
def test_gesture_traces_figure_works_for_any_number_of_gestures(num_gestures, panels):
    w = kernels(num_gestures)
    figure = gesture_traces_figure(w, spiky_scores(num_gestures))
    render(figure, draw=num_gestures != 3)
    assert len(figure.axes) == panels
    assert all(len(ax.lines) == 12 for ax in figure.axes)
    assert all(t.startswith("gesture ") for t in titles(figure))


def test_gesture_traces_figure_ranks_by_score_mass_or_follows_order():
    w = kernels(5)
    h = np.zeros((5, FRAMES))
    h[3, 10], h[1, 20], h[4, 30] = 3.0, 2.0, 1.0
    figure = gesture_traces_figure(w, h, max_gestures=3)
    assert titles(figure) == ["gesture 3 (50% of use)", "gesture 1 (33% of use)", "gesture 4 (17% of use)"]
    np.testing.assert_allclose(figure.axes[0].lines[0].get_ydata(), w[3, 0])
    assert figure.axes[0].lines[0].get_xdata()[1] == pytest.approx(5.0)  # ms per frame at 200 Hz
    figure = gesture_traces_figure(w, order=[2, 0])
    assert [t.split()[1] for t in titles(figure)] == ["2", "0"]
    with pytest.raises(ValueError, match="order"):
        gesture_traces_figure(w, order=[7])


def test_rank_gestures_without_scores_uses_kernel_norm():
    w = kernels(3) * np.array([1.0, 3.0, 2.0])[:, None, None]
    order, share = rank_gestures(w)
    assert order.tolist() == [1, 2, 0]
    np.testing.assert_allclose(share, [1 / 6, 3 / 6, 2 / 6])


def test_to_corpus_units_undoes_both_scalings():
    stats = {"low": [-1.0] * 12, "high": [3.0] * 12,
             "ema_stats": {"spk": {"mean": list(range(12)), "std": [2.0] * 12}}}
    n = np.full(12, 0.5)
    mm, unit = to_corpus_units(n, stats, "spk")
    np.testing.assert_allclose(mm, np.arange(12) + (-1.0 + 0.5 * 4.0) * 2.0)
    assert unit == "mm, speaker spk"
    z, unit = to_corpus_units(n, {"low": [-1.0] * 12, "high": [3.0] * 12})
    np.testing.assert_allclose(z, 1.0)
    assert unit == "corpus units (z-scored)"
    same, unit = to_corpus_units(n)
    np.testing.assert_allclose(same, n)
    assert unit == "normalized units"


@pytest.mark.parametrize("num_gestures, panels", [(1, 1), (3, 3), (100, 16)])
def test_gesture_paths_figure_draws_six_sensor_paths_per_gesture(num_gestures, panels):
    stats = {"low": [-1.0] * 12, "high": [3.0] * 12, "ema_stats": {"spk": {"mean": [0.0] * 12, "std": [1.0] * 12}}}
    figure = gesture_paths_figure(kernels(num_gestures), np.full(12, 0.3), stats=stats, exaggeration=1)
    render(figure, draw=num_gestures != 3)
    assert len(figure.axes) == panels
    assert "mm, speaker spk" in figure._supxlabel.get_text()
    # One rest-contour line plus one path per sensor, each starting at the rest position.
    ax = figure.axes[0]
    assert len(ax.lines) == 1 + 6
    rest_x = -1.0 + 0.3 * 4.0
    assert ax.lines[1].get_xdata()[0] == pytest.approx(rest_x)


def test_gesture_paths_figure_exaggerates_tiny_movements_and_says_so():
    w = kernels(2) * 1e-3
    baseline = np.linspace(0.1, 0.9, 12)
    figure = gesture_paths_figure(w, baseline)
    assert "exaggerated x" in figure._suptitle.get_text()
    assert "normalized units" in figure._supxlabel.get_text()
    figure = gesture_paths_figure(w, baseline, exaggeration=1)
    assert "to scale" in figure._suptitle.get_text()


@pytest.mark.parametrize("num_gestures", [1, 3, 100])
def test_score_heatmap_shows_only_gestures_in_use_with_phones(num_gestures):
    h = spiky_scores(num_gestures, active=min(num_gestures, 2))
    figure = score_heatmap_figure(h, phones=PHONES, title="utt")
    render(figure, draw=num_gestures != 3)
    strip, heatmap, colorbar = figure.axes
    image = heatmap.get_images()[0]
    assert image.get_array().shape == (min(num_gestures, 2), FRAMES)
    assert [t.get_text() for t in strip.texts] == ["sil", "p", "a", "sil"]
    assert len(heatmap.lines) == 3  # boundaries inside the utterance (the last one is its end)
    assert heatmap.get_xlabel() == "time (s)" and colorbar.get_ylabel() == "score"


def test_score_heatmap_keeps_one_frame_spikes_of_long_utterances():
    h = np.zeros((2, 20000))
    h[0, 12345] = 0.7
    h[1, 3] = 0.2
    figure = score_heatmap_figure(h)
    render(figure)
    pooled = figure.axes[0].get_images()[0].get_array()
    assert pooled.shape[1] <= 1000 and pooled.max() == pytest.approx(0.7)
    figure = score_heatmap_figure(np.zeros((3, 50)))  # nothing active: says so
    render(figure)
    assert "no gesture is active" in figure.axes[0].texts[0].get_text()


def test_learning_curves_from_csv_rows():
    text = "epoch,train_loss,train_reconstruction,test_reconstruction,gestures_in_use,active_scores\n" + "".join(
        f"{e},{1 / e + 0.1},{1 / e},{1.5 / e},0.5,0.1\n" for e in range(1, 6))
    rows = list(csv.DictReader(io.StringIO(text)))
    figure = learning_curves_figure(rows, loss="mse")
    render(figure)
    losses, usage = figure.axes
    assert [line.get_label() for line in losses.lines] == [
        "train reconstruction", "held-out reconstruction", "train total (with penalties)"]
    np.testing.assert_allclose(losses.lines[1].get_ydata(), [1.5 / e for e in range(1, 6)])
    assert losses.get_xlabel() == "epoch" and "MSE" in losses.get_ylabel()
    assert len(usage.lines) == 2
    render(learning_curves_figure([]))


def test_channel_correlation_figure_has_bars_per_channel_and_marks_undefined():
    classical = np.linspace(0.5, 0.9, 12)
    classical[4] = np.nan
    figure = channel_correlation_figure(np.full(12, 0.95), classical)
    render(figure)
    (ax,) = figure.axes
    assert len(ax.patches) == 24
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CHANNEL_LABELS)
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    render(channel_correlation_figure(np.full(12, 0.9)))


@pytest.mark.parametrize("num_learned", [1, 3, 100])
def test_planted_vs_learned_pairs_each_planted_gesture_with_its_match(num_learned):
    planted, learned = kernels(3), kernels(num_learned)
    assignment = [{"planted": 0, "learned": num_learned - 1, "lag": 1, "cosine": 0.9}]
    figure = planted_vs_learned_figure(planted, learned, assignment, classical=kernels(2),
                                       classical_assignment=[(2, 1, 0, 0.5)])
    render(figure, draw=num_learned == 100)  # the layout does not depend on the number learned
    assert len(figure.axes) == 3 * 3
    got = titles(figure)
    assert f"auto-encoder gesture {num_learned - 1} (cos 0.90, lag +1)" in got
    assert "classical gesture 1 (cos 0.50, lag +0)" in got
    assert sum(len(ax.texts) for ax in figure.axes) == 4  # the unmatched panels say so
    with pytest.raises(ValueError, match="out of range"):
        planted_vs_learned_figure(planted, learned, [(5, 0)])


@pytest.mark.parametrize("num_gestures", [1, 3, 100])
def test_neural_vs_classical_figure(num_gestures):
    figure = neural_vs_classical_figure(X, X * 0.9, X * 0.8, spiky_scores(num_gestures), spiky_scores(3),
                                        phones=PHONES)
    render(figure, draw=num_gestures != 3)
    assert len(figure.axes) == 12 + 2 + 2  # kinematics, two heatmaps, two colour bars
    assert any(t.startswith("classical CNMF: gestural scores") for t in titles(figure))


def test_save_figure_writes_a_png(tmp_path):
    save_figure(message_figure("hello"), tmp_path / "a.png", dpi=30)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


# --------------------------------------------------------------------------- make_figures


def write_stage_outputs(root, *, ground_truth: bool = True, examples: int = 2) -> FigureInputs:
    """Hand-made outputs of the train and evaluate stages and a one-utterance corpus."""
    num_gestures = 4
    model = GesturalAutoEncoder(model_config(num_gestures=num_gestures, win_size=LENGTH, hidden=8, peak_window=5,
                                                kernels="nonnegative", response_frames=0))
    normalization = {"channels": list(units.CHANNELS), "low": [-2.0] * 12, "high": [2.0] * 12,
                     "ema_stats": {"spk": {"mean": [0.0] * 12, "std": [1.5] * 12}}}
    save_model(root / "models" / "model.pt", model,
               dataclasses.asdict(train_config(num_gestures=num_gestures, win_size=LENGTH, hidden=8)), normalization)
    np.save(root / "models" / "gestures.npy", model.decoder.gesture_kernels.detach().numpy())
    (root / "plots").mkdir()
    (root / "plots" / "learning_curve.csv").write_text(
        "epoch,train_loss,train_reconstruction,test_reconstruction\n1,0.3,0.2,0.25\n2,0.2,0.1,0.15\n")
    (root / "plots" / "corr.csv").write_text(
        "channel,neural,classical\n"
        + "".join(f"{c},0.9,{'' if i == 3 else 0.7}\n" for i, c in enumerate(units.CHANNELS)))
    evaluation = root / "evaluation"
    evaluation.mkdir()
    np.savez(evaluation / "classical.npz", gesture_kernels=kernels(num_gestures), baseline=np.zeros(12))
    arrays = {"ids": np.array(["spk_001", "spk_002"][:examples], dtype=str)}
    for n in range(examples):
        arrays.update({f"x_{n}": X, f"neural_reconstruction_{n}": X * 0.9, f"classical_reconstruction_{n}": X * 0.8,
                       f"neural_scores_{n}": spiky_scores(num_gestures, active=2),
                       f"classical_scores_{n}": spiky_scores(num_gestures)})
    np.savez(evaluation / "examples.npz", **arrays)
    pairs = [{"planted": 0, "learned": 2, "lag": 0, "cosine": 0.8}] if ground_truth else None
    (evaluation / "matching.json").write_text(json.dumps({
        "ground_truth": ground_truth, "neural": {"kernel_recovery": pairs} if pairs else None,
        "classical": {"kernel_recovery": pairs} if pairs else None}))
    if ground_truth:
        np.savez(evaluation / "planted.npz", kernels=kernels(2))
    normalized = root / "data" / "normalized"
    normalized.mkdir(parents=True)
    (normalized / "index.csv").write_text(
        "utterance_id,speaker,start,frames,ema,wav,lab,split\n"
        f"spk_001,spk,0,{FRAMES},emadata/cin_us_spk/nema/spk_001.ema,,emadata/cin_us_spk/lab/spk_001.lab,test\n")
    extracted = root / "data" / "extracted"
    ema.write_lab(extracted / "emadata" / "cin_us_spk" / "lab" / "spk_001.lab", PHONES)
    return FigureInputs(model=root / "models" / "model.pt", gestures=root / "models" / "gestures.npy",
                        learning_curve=root / "plots" / "learning_curve.csv", evaluation=evaluation,
                        correlation=root / "plots" / "corr.csv", normalized=normalized, extracted=extracted)


@pytest.mark.slow
def test_make_figures_writes_every_declared_figure(tmp_path):
    inputs = write_stage_outputs(tmp_path)
    out = tmp_path / "plots" / "figures"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = make_figures(out, inputs, PlotParams(dpi=30, max_gestures=3))
    assert [p.name for p in paths] == list(FIGURES)
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.mark.slow
def test_make_figures_without_ground_truth_or_examples_keeps_the_file_set(tmp_path):
    inputs = write_stage_outputs(tmp_path, ground_truth=False, examples=0)
    out = tmp_path / "figures"
    make_figures(out, inputs, PlotParams(dpi=30, max_gestures=3))
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES)


def test_make_figures_names_a_missing_input(tmp_path):
    inputs = write_stage_outputs(tmp_path)
    (inputs.evaluation / "examples.npz").unlink()
    with pytest.raises(FigureInputError, match=r"examples\.npz.*dvc repro evaluate"):
        make_figures(tmp_path / "figures", inputs, PlotParams(dpi=30, max_gestures=3))
    assert not (tmp_path / "figures").exists()


def test_read_channel_correlation_orders_by_channel_and_reads_blanks_as_nan(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("channel,neural,classical\nll_y,0.5,\ntd_x,0.9,0.8\n")
    neural, classical = read_channel_correlation(path)
    assert neural[0] == 0.9 and neural[11] == 0.5 and np.isnan(neural[1])
    assert classical[0] == 0.8 and np.isnan(classical[11])


def test_plot_params_validate_the_section():
    from gestural.core.params import ParamsError

    assert PlotParams.from_params({}) == PlotParams()
    assert PlotParams.from_params({"plot": {"dpi": 80}}).dpi == 80
    with pytest.raises(ParamsError, match="plot.dpi"):
        PlotParams.from_params({"plot": {"dpi": 5}})
    with pytest.raises(ParamsError, match="unknown"):
        PlotParams.from_params({"plot": {"colour": "red"}})


def test_trainer_figures_accept_tensors():
    figure = gesture_traces_figure(torch.rand(3, 12, LENGTH), torch.rand(3, FRAMES))
    assert len(figure.axes) == 3
    figure = reconstruction_figure(torch.as_tensor(X), torch.as_tensor(X))
    np.testing.assert_allclose(figure.axes[0].lines[1].get_ydata(), X[0])
