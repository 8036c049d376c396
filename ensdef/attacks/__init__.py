"""Attacks come from ART (:mod:`catalog` binds each budget of :mod:`ensdef.presets.budgets` to its ART
builder); this package wraps models and defenses so that ART can attack them: EOT surrogates, the
detector-aware objective, gray-box, superimposition and multi-sample attacks, and the attack cache."""
