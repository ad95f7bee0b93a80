"""Synthetic corpora with a known answer, written in exactly the layout and formats of CMU's
``emadata.tgz``: the task-dynamics articulatory generator (:mod:`~gestural.synthetic.articulatory`),
the older events corpus and the archive writer (:mod:`~gestural.synthetic.generator`), and the
planted ground truth's file, ``data/raw/ground_truth.npz`` (:mod:`~gestural.synthetic.ground_truth`)."""
