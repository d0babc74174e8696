"""Running lens on Slurm: profiles, plans, container commands, sbatch scripts, Slurm CLI."""
