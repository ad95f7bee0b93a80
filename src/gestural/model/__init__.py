"""The convolutive auto-encoder and what belongs to it: the network (encoder -> gestural scores,
decoder holding the gesture kernels and their responses, :mod:`~gestural.model.network`), its
file ``models/model.pt`` (:mod:`~gestural.model.file`) and the kernels file
``models/gestures.npy`` (:mod:`~gestural.model.gestures_file`), starting points for the kernels,
the training losses and the optimizers."""
