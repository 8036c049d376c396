"""Diversity: pairwise Cohen kappa on negative examples, the interrater-agreement score and kappa-ranked
team enumeration (:mod:`kappa`), and MODEF's team selection policies and their saved form (:mod:`teams`)."""
