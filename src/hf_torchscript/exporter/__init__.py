"""Export: a model folder in, a validated artifact out. ``flow.export`` runs the steps in order, one module each:
source -> prepare (inputs, quantize) -> shapes (backends/) -> parity -> artifact (write) -> textcheck -> commit.
``validate.validate`` re-runs the proof on an existing artifact."""
