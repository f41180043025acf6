"""billing tasks live in several modules of this package; each submodule counts."""
