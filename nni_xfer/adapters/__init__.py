"""NNI plumbing: the ``nnictl`` tuner, the ``NasExperiment`` adapters and the driver that starts,
watches and stops ``nnictl`` experiments. Both adapters drive one :class:`nni_xfer.session.SearchSession`."""
