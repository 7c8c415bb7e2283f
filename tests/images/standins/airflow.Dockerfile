# Stand-in for apache/airflow:<version>-python3.11 (the Airflow image's base): its `airflow` user (uid
# 50000, group 0) whose `pip` installs into an environment on the PATH, AIRFLOW_HOME=/opt/airflow.
# Unlike the official base: Airflow itself is not preinstalled (the image installs it from uv.lock),
# and there is no entrypoint script (`airflow` is run directly).
ARG DEBIAN_IMAGE=localhost/colliderflow-standin/debian:bookworm
FROM ${DEBIAN_IMAGE}
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
 && python3.11 -m venv /home/airflow/.local \
 && mkdir -p /opt/airflow \
 && chown -R airflow:0 /home/airflow /opt/airflow
ENV AIRFLOW_HOME=/opt/airflow \
    PATH=/home/airflow/.local/bin:$PATH \
    LANG=C.UTF-8
WORKDIR /opt/airflow
USER 50000
