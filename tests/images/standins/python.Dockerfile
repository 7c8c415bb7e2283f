# Stand-in for python:3.11.x-slim-bookworm (the TensorFlow image's base): Debian bookworm's Python 3.11
# where the official image keeps its interpreter, /usr/local/bin.
ARG DEBIAN_IMAGE=localhost/colliderflow-standin/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN for name in python3.11 python3 python; do ln -s /usr/bin/python3.11 "/usr/local/bin/$name"; done
ENV LANG=C.UTF-8
CMD ["python3"]
