"""The `orc` command: the composition root that wires components into processes.

Only this package imports several components; they never import each other.
"""
