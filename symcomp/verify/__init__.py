"""Stage: numerical verification of symmetries against the Jacobian ground truth."""
