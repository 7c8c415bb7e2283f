# Stand-in for ghcr.io/astral-sh/uv:<version>: the same two binaries, taken from this machine's uv of
# the version the Makefile pins (the build context holds them).
FROM scratch
COPY uv uvx /
