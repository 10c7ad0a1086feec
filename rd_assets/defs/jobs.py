"""``rd_task_job``: one task's assets and checks, the job the sensor and the schedule request runs of.

The code location's executor is Dagster's ``multi_or_in_process_executor``; this job selects ``in_process``
by default because a run is one step (:mod:`rd_assets.defs.rd_task_assets`): a step process would only add an
interpreter and a code-location load to every task. A run can still ask for ``multiprocess`` in its run
config (``execution: {config: {multiprocess: {}}}``).
"""

from dagster import AssetSelection, define_asset_job

from rd_assets.defs.specs import CHAIN

IN_PROCESS = {"execution": {"config": {"in_process": {}}}}

rd_task_job = define_asset_job(
    "rd_task_job",
    selection=AssetSelection.assets(*CHAIN),
    config=IN_PROCESS,
    description="Materialize one task's six assets and their checks (requested by the sensor and the schedule).",
)
