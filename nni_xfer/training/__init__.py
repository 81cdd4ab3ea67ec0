"""Training: the plain-PyTorch trainer, the evaluators (a trained network -> metrics) and the
weight initializers (how a trial's network starts: the knowledge-transfer mechanisms)."""
