"""How good a trained model is, on held-out utterances: the evaluate stage's run
(:mod:`~gestural.evaluation.held_out`), the classical baseline as it is scored
(:mod:`~gestural.evaluation.classical`), recovery of the planted gestures (activation AUC,
kernel matching, onset F1), gesture-phone associations, the gestural scores exported as
TextGrids and tables (:mod:`~gestural.evaluation.export`), and the stage's files with their
readers (:mod:`~gestural.evaluation.files`)."""
