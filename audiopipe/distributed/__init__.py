"""The distributed campaign, above :mod:`audiopipe.campaign.pg`: a planner, prepare jobs and send tokens
carried out by procrastinate workers on any number of machines, sharing one PostgreSQL ledger and one
store of prepared files.

- :mod:`.planner`    a folder and a contacts CSV into a plan and its jobs, in one transaction;
- :mod:`.context`    what every job body receives (:class:`~.context.WorkerContext`);
- :mod:`.send_task`  the send token: wait for the campaign's pace, claim one send, make it, record it;
- :mod:`.app`        the procrastinate App: the tasks and the periodic safety nets;
- :mod:`.worker`     :func:`~.worker.run_worker`, a worker process's life (signals, until idle);
- :mod:`.idle`       whether any campaign has work left, and when the next is due.
"""
