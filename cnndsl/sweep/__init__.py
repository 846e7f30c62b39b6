"""Hyperparameter search over a .cnn file's search space (`cnndsl sweep`, docs/sweep.md).

space.py    search spaces: choice/int/float/log parameter defaults and --space NAME=SPEC
check.py    every point (or a seeded sample) through the shape checker, invalid ones grouped by reason
study.py    the Optuna study: sampler, pruner fed each epoch, SQLite storage, resume, several processes
results.py  the table (sweep.json, sweep.csv), the accuracy/FLOPs plot with its Pareto front, best.cnn
"""
