# podseg node agent image. Build: docker build -t ghcr.io/podseg/podseg:0.1.0 .
# Every install step is in scripts/image/build-rootfs.sh, the one build definition this file
# and the test cluster's local builder (scripts/cluster/podseg-image.sh: debootstrap, chroot,
# no registry) share; that builder also reads ENV, ENTRYPOINT, CMD and LABEL from here.
# Debian's own Python 3.11; no compiler, no pip in the result (docs/operations.md, "Image").
ARG BASE_IMAGE=debian:bookworm-slim
ARG GO_IMAGE=golang:1.22-bookworm

# podseg-cni, the chained CNI plugin (docs/cni.md): a static Go binary built by its own script;
# only the binary leaves this stage (`podseg cni install` copies it to the node).
FROM ${GO_IMAGE} AS cni
RUN --mount=type=bind,source=deploy/cni,target=/src bash /src/build.sh /out

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="podseg" \
      org.opencontainers.image.description="Node agent enforcing Kubernetes NetworkPolicy with nftables inside each pod's network namespace" \
      org.opencontainers.image.source="https://github.com/podseg/podseg" \
      org.opencontainers.image.documentation="https://github.com/podseg/podseg/blob/main/docs/operations.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# The build context (pyproject.toml, README.md, agent/ and the script: .dockerignore) is bound
# for this one step only, so no source file stays in any layer of the image.
RUN --mount=type=bind,target=/src,rw sh /src/scripts/image/build-rootfs.sh /src
COPY --from=cni /out/podseg-cni /usr/local/lib/podseg/podseg-cni
# Read-only root filesystem: bytecode was compiled at install time, never write more.
ENV PATH=/opt/podseg/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The agent runs as root with NET_ADMIN, SYS_ADMIN and SYS_PTRACE only (see deploy/): entering
# other namespaces needs capabilities Kubernetes grants a non-root user only as ambient ones.
# `podseg responder` (deploy/responder/) runs from the same image as uid 65532: it needs none.
ENTRYPOINT ["podseg"]
CMD ["agent"]
