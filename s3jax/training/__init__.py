"""The trainer: state, steps, optimizer, checkpoints, metrics and the loop (`loop.train_and_evaluate`)."""
