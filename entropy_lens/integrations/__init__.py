"""Peer trainers wrapped around entropy-lens' pieces: :mod:`entropy_lens.integrations.trl` (``LensGRPOTrainer``).

Integrations may import ``capture``, ``train``, ``store`` and ``ops``; nothing in the package imports them (each
pulls in its trainer library, an optional dependency).
"""
