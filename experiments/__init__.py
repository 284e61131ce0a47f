"""The experiment scripts, importable as ``experiments.NAME`` (the tests do; pytest puts the repository root on the
path). Each is run as ``PYTHONPATH=src python experiments/NAME.py``; what they share lives in ``diffloss.runs``."""
