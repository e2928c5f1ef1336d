"""The application: the design search (search, planning), its tracking in MLflow, the reports and figures,
workspaces and terminal output. It builds on the science library and never imports the command line
(``tests/test_layers.py``)."""
