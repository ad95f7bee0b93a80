"""Everything drawn: the shared style and checks (:mod:`~gestural.figures.style`), movement and
kernel figures (:mod:`~gestural.figures.kinematics`), gestural-score figures
(:mod:`~gestural.figures.scores`), learning curves and channel correlations
(:mod:`~gestural.figures.curves`), and the plot stage's summary figures from the pipeline's
files (:mod:`~gestural.figures.summary`). Nothing here changes a result."""
