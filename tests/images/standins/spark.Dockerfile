# Stand-in for apache/spark:<version>-scala2.13-java21-python3-ubuntu (the Spark image's base): a JRE,
# a Spark distribution of the same version in /opt/spark (the pyspark wheel's bin/ and jars/), its
# `spark` user (uid 185) and work directory, SPARK_HOME. Unlike the official base: Java 17 (bookworm's),
# Debian instead of Ubuntu, and a python3.11 on the PATH (the official base has another version).
ARG DEBIAN_IMAGE=localhost/colliderflow-standin/debian:bookworm
FROM ${DEBIAN_IMAGE}
ARG SPARK_VERSION=4.2.0
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /tmp/pip \
 && /tmp/pip/bin/pip install --no-cache-dir --target /tmp/dist "pyspark==${SPARK_VERSION}" \
 && mv /tmp/dist/pyspark /opt/spark \
 && rm -rf /tmp/pip /tmp/dist \
 && mkdir -p /opt/spark/conf /opt/spark/work-dir \
 && groupadd --gid 185 spark \
 && useradd --uid 185 --gid 185 --home-dir /opt/spark --no-create-home --shell /usr/sbin/nologin spark \
 && chown spark:spark /opt/spark/work-dir
ENV SPARK_HOME=/opt/spark \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    LANG=C.UTF-8
WORKDIR /opt/spark/work-dir
USER 185
