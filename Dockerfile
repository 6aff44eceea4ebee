# podseg node agent image. Build: docker build -t ghcr.io/podseg/podseg:0.1.0 .
# Two stages on the same base (the virtualenv's interpreter path must match): the build stage
# installs the project into /opt/podseg; the final stage gets the runtime tools and the venv,
# no compiler, no pip. Estimated size ~240 MB uncompressed (docs/operations.md, "Image").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
# Every dependency ships as a wheel, so no compiler is needed even here. The unused asyncio
# flavour of the Kubernetes client (kubernetes/aio, ~68 MB) and pip itself are dropped.
RUN python -m venv /opt/podseg \
 && /opt/podseg/bin/pip install /src \
 && rm -rf /opt/podseg/lib/python3.11/site-packages/kubernetes/aio \
 && /opt/podseg/bin/pip uninstall -y pip setuptools \
 && /opt/podseg/bin/python -c "import agent.app, agent.cleanup, agent.dataplane.worker, agent.responder.app"

FROM ${PYTHON_IMAGE}
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
# Runtime tools: libnftables1 (the agent's dataplane), nft, ip and conntrack for operators
# debugging a node (`kubectl exec ... -- nft list ruleset`); iptables and ipset for
# `--backend iptables` (and for `podseg cleanup` of its leftovers). Versions follow the base's Debian
# release and its security updates, hence no pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables libnftables1 iproute2 conntrack \
      iptables ipset \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/podseg /opt/podseg
# Read-only root filesystem: bytecode was compiled at install time, never write more.
ENV PATH=/opt/podseg/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The agent runs as root with NET_ADMIN, SYS_ADMIN and SYS_PTRACE only (see deploy/): entering
# other namespaces needs capabilities Kubernetes grants a non-root user only as ambient ones.
# `podseg responder` (deploy/responder/) runs from the same image as uid 65532: it needs none.
ENTRYPOINT ["podseg"]
CMD ["agent"]
