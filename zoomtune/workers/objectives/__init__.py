"""Built-in objectives: plain functions `objective(params, trial) -> float`."""
