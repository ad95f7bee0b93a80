"""Classical convolutive NMF (NMFD / seqNMF multiplicative updates, in torch): the method the
network is compared with. It knows nothing of the network or the corpus: the estimator is
:class:`~gestural.classical.cnmf.ConvNMF`, its updates :mod:`~gestural.classical.updates`."""
