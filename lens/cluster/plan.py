"""What runs, in which order: the steps of an experiment and the dependencies between them.

    classify:  classify (array) -> report (afterany)
    pretrain:  pretrain (array) -> report (afterany)
    finetune:  finetune (array) -> report (afterany)
    all:       pretrain (array) -> finetune (array, aftercorr) -> report (afterany)

``aftercorr``: finetune fold K starts when pretrain fold K has succeeded (not when every
fold has). ``afterany``: the report runs whatever the folds' outcome, so it can also report
failed folds. Shared by ``lens generate`` (sbatch scripts) and ``lens submit`` (submitit).
"""

from __future__ import annotations

from dataclasses import dataclass

from lens.errors import LensError

STAGES = ("classify", "pretrain", "finetune")
EXPERIMENTS = (*STAGES, "all")
REPORT = "report"


@dataclass(frozen=True)
class Step:
    """One job of an experiment: an array over the folds (a stage) or the report."""

    name: str
    kind: str  # "array" or "aggregate"
    after: str | None = None
    dependency: str | None = None

    @property
    def is_array(self) -> bool:
        return self.kind == "array"


def plan_steps(experiment: str) -> tuple[Step, ...]:
    """The steps of ``--stage EXPERIMENT``, in submission order."""
    if experiment not in EXPERIMENTS:
        raise LensError(f"--stage {experiment!r}: valid stages are {', '.join(EXPERIMENTS)}")
    if experiment == "all":
        arrays = (Step("pretrain", "array"),
                  Step("finetune", "array", after="pretrain", dependency="aftercorr"))
    else:
        arrays = (Step(experiment, "array"),)
    return (*arrays, Step(REPORT, "aggregate", after=arrays[-1].name, dependency="afterany"))


def array_stages(experiment: str) -> tuple[str, ...]:
    """The training stages of an experiment, in order."""
    return tuple(s.name for s in plan_steps(experiment) if s.is_array)
