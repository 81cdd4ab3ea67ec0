"""Data: the dataset contract and pipeline (:mod:`~nni_xfer.data.pipeline`: splits, normalisation,
cache), the built-in in-memory datasets (:mod:`~nni_xfer.data.builtin`) and streamed image folders
(:mod:`~nni_xfer.data.imagefolder`)."""
