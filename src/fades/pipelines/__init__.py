"""Pipelines: functions chained into a graph that spans nodes.

* :mod:`.spec`: the YAML/JSON spec and its validation;
* :mod:`.guard`: the guard expressions of branches (``ice == true``);
* :mod:`.planner`: which node runs which stage, and why (through the Placer);
* :mod:`.protocol`: plans, bundles and stage events on the Bus;
* :mod:`.engine`: a node's pipeline engine (bundles in, stage executions, bundles out);
* :mod:`.service`: the controller's side (submit, runs, failover).

See ``docs/pipelines.md``.
"""
