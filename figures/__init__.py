"""The paper's figures, one script per figure, and ``make_all`` (run from the repository root as
``python -m figures.make_all``; layout and inputs: figures/README.md)."""
