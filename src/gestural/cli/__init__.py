"""The ``gestural`` command line (:mod:`~gestural.cli.main`): ``gestural factorize`` for new
utterances with a trained model (:mod:`~gestural.cli.factorize`) and ``gestural compare`` for
model selection across DVC experiments (:mod:`~gestural.cli.compare`, reading them through
:mod:`~gestural.cli.experiments`)."""
