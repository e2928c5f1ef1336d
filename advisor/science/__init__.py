"""The science library: what a rig records (protocols, modalities), the statistics and features of a
recording, the classifiers, and how well a recording identifies the rule next to the controls (evaluation,
assessment). It imports the simulator and nothing of the application or the command line
(``tests/test_layers.py``)."""
