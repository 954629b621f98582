"""The long-running service: scheduler, HTTP health/metrics/site, reload, retention, locks for scale-out.

run_service(db_url, config_dir, ServiceOptions(...)) -> exit code     what `monitor run` calls
Service(engine, config, options)                                      the scheduler and its jobs
prune_unmatched(engine, days=N)                                       retention, callable on its own
"""

from monitor.service.config_watch import ConfigWatcher
from monitor.service.retention import RetentionReport, prune_unmatched
from monitor.service.run import open_database, run_service
from monitor.service.scheduler import Service, ServiceOptions

__all__ = [
    "ConfigWatcher",
    "RetentionReport",
    "Service",
    "ServiceOptions",
    "open_database",
    "prune_unmatched",
    "run_service",
]
