"""Attacks come from ART; this package only wraps models and defenses so that ART can attack them."""
