"""What a run leaves and every tool reads, below the trainer and the deploy and report tools: the workdir's
files (`workdir_files`), the checkpoint store and its reading (`checkpoints`, `checkpoint_reading`), the
variables a config builds (`variables`) and the one program that evaluates them (`eval_program`). Every
file read from outside is guarded here: a truncated or corrupt one is one ConfigError line naming it."""
