"""Test helpers shipped with the package: the strategy contract suite and fakes."""
