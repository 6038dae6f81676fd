"""The diarization app's services, one module per concern; callers import the module they use.

``tuning``: the service's thresholds, engine settings and limits; ``jobs``: batch intake,
dispatch, recovery and the orchestrator's completion without a node; ``node_work``: a job run
on a node; ``completion``: a job's result or failure written once, then its cleanup;
``webhook_delivery``: the finished job POSTed to its webhook; ``streams``: streaming sessions.
"""
