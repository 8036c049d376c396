"""Ray tasks: the evaluation's defense rows spread over a local Ray or a cluster (``ensdef evaluate --workers N``
or ``--address ADDR``), registered as the ``ray`` runner of the ``ensdef.runners`` entry-point group so that
the library never imports Ray."""
