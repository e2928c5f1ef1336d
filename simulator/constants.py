"""Names the simulator's modules share, in a module that imports nothing: ``config`` validates against the
registries (``networks``, ``rules``, ``tasks``), and ``networks`` needs the layer groups, so the groups live here
and the import graph stays acyclic (``tests/test_layers.py``)."""

SCHEMA_VERSION = 3
"""Part of the bank hash: bump it whenever the bank layout, a rule's update or a recorded quantity changes, so
that no cached bank built by older code is ever returned for a config."""

DEFAULT_WEIGHT_DECAY = 0.01
"""Forward-weight decay of every rule (issue 9: measured in ``benchmarks/results/rule_alignment-cpu2.json``)."""

GROUPS = ("early", "middle", "deep")
"""Layer groups: hidden layers are split into thirds by depth (see ``networks.layer_groups``)."""
