# podseg node agent image (first version; the deploy issue completes it).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN python -m venv /opt/podseg && /opt/podseg/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="podseg" \
      org.opencontainers.image.description="Node agent enforcing Kubernetes NetworkPolicy inside pod network namespaces" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables libnftables1 iproute2 conntrack \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/podseg /opt/podseg
ENV PATH=/opt/podseg/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["podseg"]
CMD ["agent"]
