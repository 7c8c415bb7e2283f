"""Standalone pipeline stages, one package per stage (``python -m jobs.<stage> --help``); what two or
more stages share lives in ``jobs.core``, the DL-trigger data contract in ``jobs.dltrigger_schema``.

Nothing under ``jobs`` imports Airflow: each stage runs the same way from a shell, a subprocess task,
a Spark driver or a Kubernetes pod.
"""

try:  # The XRootD client must load before TensorFlow: the other order segfaults in XRootD's import
    # (xrootd 6.2.1 beside tensorflow 2.x), e.g. in a train or evaluate run reading root:// URLs.
    from XRootD import client as _xrootd_client  # noqa: F401
except ImportError:  # the client is in the spark extra; the Airflow image has none
    pass
