"""Ray Tune layer: trainables for each pool and team-selection sweeps (see docs/architecture.md)."""
