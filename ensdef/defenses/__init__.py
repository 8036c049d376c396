"""Defenses: one module each. ``ensdef.defenses.registry`` assembles them from an artifact store."""
