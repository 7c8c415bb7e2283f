"""Imported first by the process executor's forkserver (its preload list), never by a driver: the
server then dies with the driver that started it, and its workers with the server
(jobs.core.lifetime). Without it a driver killed by SIGKILL left the server under PID 1, kept alive by
the threads its preloaded modules start, and every worker it had forked with it."""

from jobs.core.lifetime import die_with_parent

die_with_parent()
