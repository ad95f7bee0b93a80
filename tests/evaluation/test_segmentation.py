"""The one segmentation of scores into intervals (what the TextGrid and events.csv hold and the
evaluate stage scores): spans, the per-gesture scale, merging and the shortest interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import model_config

from gestural.evaluation.segmentation import GestureEvent, Segmentation, kernel_support
from gestural.model.network import GesturalAutoEncoder

L = 10


def test_each_spike_of_an_impulse_model_is_one_event_spanning_its_kernel_with_its_height():
    scores = np.zeros((3, 100))
    scores[0, [10, 40]] = [0.8, 0.4]
    scores[0, 70] = 0.05  # below 10 % of the row's largest: no event
    scores[2, 95] = 1.0  # the kernel runs past the end: clipped (5 frames, kept with min_frames 5)
    events = Segmentation(L, relative_height=0.1, min_frames=5).events(scores)
    assert events == [GestureEvent(0, 10, 20, pytest.approx(0.8)), GestureEvent(0, 40, 50, pytest.approx(0.4)),
                      GestureEvent(2, 95, 100, pytest.approx(1.0))]


def test_runs_that_touch_merge_and_a_held_activation_is_one_event_over_its_frames():
    scores = np.zeros((2, 200))
    scores[0, 10:20] = 0.5
    scores[0, 20:30] = 0.9  # touches: one event, its amplitude the larger score
    scores[1, 50:120] = 0.05  # a held activation, weak
    scores[1] += 0.001 * (np.arange(200) % 7 == 0)  # haze far below the threshold
    level = Segmentation(1, relative_height=0.1, peak_share=0.0, min_frames=1)  # on wherever active
    events = level.events(scores)
    assert [(e.gesture, e.onset, e.offset) for e in events] == [(0, 10, 30), (1, 50, 120)]
    assert events[0].amplitude == pytest.approx(0.9)
    assert level.events(scores, gestures=[1]) == events[1:]
    # At 0.8 of its run's peak the first run is on where it holds 0.9 only.
    assert [(e.onset, e.offset) for e in Segmentation(1, relative_height=0.1, min_frames=1).events(scores)] == [
        (20, 30), (50, 120)]


def test_a_reduced_token_is_cut_at_its_own_height_as_wide_as_a_full_one():
    rise_hold_fall = np.concatenate([np.linspace(0, 1, 11)[1:], np.ones(20), np.linspace(1, 0, 11)[:-1]])  # 40 frames
    scores = np.zeros((1, 200))
    scores[0, 20:60] = rise_hold_fall
    scores[0, 120:160] = 0.5 * rise_hold_fall  # the same gesture, reduced
    by_peak = Segmentation(1, scale=np.array([1.0]), relative_height=0.3, peak_share=0.7, min_frames=1).events(scores)
    assert [(e.onset, e.offset) for e in by_peak] == [(26, 54), (126, 154)]
    fixed = Segmentation(1, scale=np.array([1.0]), relative_height=0.3, peak_share=0.0, min_frames=1).events(scores)
    full, reduced = (e.offset - e.onset for e in fixed)
    assert reduced <= full - 5  # a fixed level cuts the reduced token narrower


def test_the_scale_is_the_gestures_training_maximum_not_the_utterances():
    scores = np.zeros((2, 100))
    scores[0, 10:30] = 1.0
    scores[1, 50:70] = 0.1  # gesture 1 barely used here: a tenth of what it reaches in training
    per_utterance = Segmentation(1, relative_height=0.4, min_frames=1).events(scores)
    assert [e.gesture for e in per_utterance] == [0, 1]
    trained = Segmentation(1, scale=np.array([1.0, 1.0]), relative_height=0.4, min_frames=1).events(scores)
    assert [e.gesture for e in trained] == [0]


def test_runs_shorter_than_min_frames_are_no_gesture():
    scores = np.zeros((1, 100))
    scores[0, 10:13] = 1.0  # 15 ms
    scores[0, 50:60] = 1.0
    assert [(e.onset, e.offset) for e in Segmentation(1, min_frames=6).events(scores)] == [(50, 60)]


def _kernels_moving_in(frames: slice, count: int = 3, win_size: int = 20) -> torch.Tensor:
    kernels = torch.zeros(count, 12, win_size)
    kernels[:, 0, frames] = 1.0
    return kernels


def test_a_gesture_whose_score_drives_a_slow_response_is_cut_frame_by_frame_and_an_impulse_where_its_kernel_moves():
    model = GesturalAutoEncoder(model_config(num_gestures=5, response_frames=40, win_size=20, release_response=False))
    # 5 Hz (mean delay ~12 frames), an impulse, a 1.4-frame delay (an events gesture's), 3.5 frames (a VAE's events
    # gesture, whose posterior means are spikes too) and 4.5 frames (the quickest articulatory activation)
    with torch.no_grad():
        model.decoder.log_rate.copy_(torch.log(torch.tensor([2 * math.pi * 5 / 200, 3.0, 1.0, 0.5, 0.4])))
        model.decoder.kernels_raw.copy_(_kernels_moving_in(slice(8, 15), count=5))
    segmentation = Segmentation.of_model(model)
    assert segmentation.span.tolist()[:3] == [1, 7, 9]  # the delayed one moves the sensors a little longer
    assert segmentation.lead.tolist()[:3] == [0, 8, 8]
    assert segmentation.span[3] > 1 and segmentation.lead[3] > 0
    assert segmentation.span[4] == 1 and segmentation.lead[4] == 0
    plain = GesturalAutoEncoder(model_config(num_gestures=3, response_frames=0, win_size=20))
    with torch.no_grad():
        plain.decoder.kernels_raw.copy_(_kernels_moving_in(slice(0, 20)))
    assert Segmentation.of_model(plain).span.tolist() == [20, 20, 20]


def test_an_impulse_covers_the_frames_where_its_kernel_moves_the_sensors_not_its_whole_window():
    kernels = np.zeros((2, 12, 20))
    kernels[0, 3, 8:15] = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]  # a 35 ms movement late in a 100 ms window
    kernels[0, 3, 16] = 0.1  # a tenth of it: drift, not the gesture
    kernels[1, 5, :] = 0.0  # never moves: covers its window
    first, count = kernel_support(kernels)
    assert first.tolist() == [8, 0] and count.tolist() == [7, 20]
    scores = np.zeros((2, 100))
    scores[0, 10] = 1.0
    events = Segmentation.of_kernels(kernels, min_frames=1).events(scores)
    assert [(e.gesture, e.onset, e.offset) for e in events] == [(0, 18, 25)]
    assert events[0].amplitude == pytest.approx(1.0)


@pytest.mark.parametrize("settings, message", [
    (dict(span=0), "span: must be >= 1"), (dict(span=1, relative_height=0.0), "relative_height: must be in"),
    (dict(span=1, min_frames=0), "min_frames: must be >= 1")])
def test_impossible_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        Segmentation(**settings)


def test_an_impulse_playing_a_kernel_shorter_than_the_minimum_is_still_an_event():
    scores = np.zeros((1, 50))
    scores[0, 10] = 1.0
    assert [(e.onset, e.offset) for e in Segmentation(4, min_frames=6).events(scores)] == [(10, 14)]
