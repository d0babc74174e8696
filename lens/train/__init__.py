"""Training: one (stage, fold) task at a time — `lens train` and every Slurm array task.

Start at ``lens.train.task.run_task``; the stages are in ``lens.train.stages``.
"""
