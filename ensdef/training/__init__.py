"""Training: the loops (:mod:`loops`: classifiers at a temperature, with noise augmentation; denoising
autoencoders), pool plans and the member trainer (:mod:`pools`), DeT cross-training and reformer-list
selection (:mod:`det`), RLS group optimisation (:mod:`rls`), the ART-trained baselines (:mod:`baselines`),
the training cost model (:mod:`cost`), importing a user's own target (:mod:`importing`), and MODEF team
selection and its sweep (:mod:`selection`, :mod:`team_sweep`). Tune (``tune/``) runs the same trainers."""
