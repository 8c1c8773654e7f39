"""The embedded trainer: GRPO with DAPO's tricks (``grpo.py``), its pure numerics (``core.py``) and the
registered advantage shapers (``shaping.py``)."""
