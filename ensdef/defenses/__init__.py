"""Defenses: one module each (single model, denoising, verification, cross-layer, noisy vote, RLS, DeT) on the
:class:`~ensdef.defenses.base.Defense` contract. A defense's decision is a plan of member jobs
(:mod:`plans`), run in process or fanned out by the service alike; :mod:`registry` assembles defenses from an
artifact store, with weights or as weight-free descriptions."""
