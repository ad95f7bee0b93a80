"""Foundations every other layer builds on, and that know nothing of gestures or EMA files:
atomic writes (:mod:`~gestural.core.files`), ``params.yaml`` reading and checking
(:mod:`~gestural.core.params`), one-line stage errors (:mod:`~gestural.core.stage`), the torch
device, progress lines, a process pool, the EMA channel layout and frame rate
(:mod:`~gestural.core.units`), and the arithmetic of a convolutive factorization and its
reconstruction and sparsity measures (:mod:`~gestural.core.metrics`)."""
