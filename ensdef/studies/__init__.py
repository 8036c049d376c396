"""Studies: the papers' own measurements on a stored pool, each behind one command: the temperature
ensemble's accuracy figures (:mod:`noisy_report`), RLS against one sub-model and dropout
(:mod:`rls_compare`), certified accuracy of the noisy vote (:mod:`certify_run`)."""
