"""Fitting the model to the normalized corpus: the train stage's settings
(:mod:`~gestural.training.config`), the training loop (:mod:`~gestural.training.trainer`),
the per-epoch checkpoint a killed run resumes from (:mod:`~gestural.training.checkpoint`), and
what a run leaves behind: model files, metrics, learning curve and TensorBoard log
(:mod:`~gestural.training.outputs`)."""
