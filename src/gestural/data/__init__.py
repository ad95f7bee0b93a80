"""The corpus, from an archive to tensors: CMU's file formats (nema, EST Track, lab, stats),
download and safe extraction of ``emadata.tgz``, the ``nema2npy`` stage's one-array corpus
(:mod:`~gestural.data.corpus`), its tables on disk (:mod:`~gestural.data.dataset`), the
train/test split and [0, 1] scaling (:mod:`~gestural.data.normalize`) and back to millimetres
(:mod:`~gestural.data.scaling`), and utterances held on the device for training
(:mod:`~gestural.data.batches`)."""
