"""Evaluation: the harness that attacks every defense under each threat model (:mod:`harness`), scoring
(:mod:`scoring`: the attack set, a defense's rates on a set), outcome rates (:mod:`metrics`), the report's
sanity checks (:mod:`sanity`), MODEF's transferability and kappa tables (:mod:`tables`), the report files and
plots (:mod:`report`, :mod:`plots`), and randomized-smoothing certification (:mod:`certify`)."""
