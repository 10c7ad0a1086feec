"""``rd_task_job``: one task's assets and checks, the job the sensor and the schedule request runs of.

The code location's executor is Dagster's ``multi_or_in_process_executor``; this job selects ``in_process``
by default because a run is one step (:mod:`rd_assets.defs.rd_task_assets`): a step process would only add an
interpreter and a code-location load to every task. A run can still ask for ``multiprocess`` in its run
config (``execution: {config: {multiprocess: {}}}``).

A run worker prints its events to the terminal of ``dg dev``; Dagster's console logger prints DEBUG by default,
a dozen lines per step for every task. The job's run config sets it to INFO: the terminal shows what a
person acts on (logs, materializations, failures), and every event, DEBUG included, is still stored and
shown in the UI (the console logger's level filters the console only).
"""

from dagster import AssetSelection, define_asset_job

from rd_assets.defs.specs import CHAIN

IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
RUN_CONFIG = IN_PROCESS | CONSOLE_INFO

rd_task_job = define_asset_job(
    "rd_task_job",
    selection=AssetSelection.assets(*CHAIN),
    config=RUN_CONFIG,
    description="Materialize one task's six assets and their checks (requested by the sensor and the schedule).",
)
