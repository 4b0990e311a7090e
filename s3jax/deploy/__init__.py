"""Deployment: an export at the bit width (`export`), its plain, multiplication-free and StableHLO
inference paths (`inference`), and export or evaluation of a training workdir (`from_workdir`)."""
