"""Model checkpoints the factory makes itself: the tiny example model a first build
compiles (`factory example-model`), the same kind the tests build."""
