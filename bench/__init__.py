"""bench: a benchmark harness for multi-task learning in PyTorch.

A suite (YAML) declares datasets x strategies x seeds; `bench run SUITE` trains every cell,
stores each result under `results/<suite>/<cell>/`, and `bench report SUITE` turns the store into
`reports/<suite>.md`. See README.md for the design and the commands.
"""

__version__ = "0.1.0"
