#!/bin/sh
# build-rootfs.sh SRC -- the one build definition of the podseg image.
#
# Run as root INSIDE a Debian bookworm root filesystem, with SRC holding the runtime
# distribution (pyproject.toml, README.md, agent/; never testbed/):
#   * by the Dockerfile (RUN on debian:bookworm-slim, the build context bound at SRC);
#   * by scripts/cluster/podseg-image.sh (chroot into a `debootstrap --variant=minbase`
#     bookworm rootfs, for the test cluster, no container registry involved).
# Both then add the same environment, entrypoint and labels (the local builder reads them
# from the Dockerfile), so the two images cannot drift.
#
# Result: Debian's Python 3.11, the runtime tools (libnftables1 for the agent's dataplane; nft,
# ip and conntrack for operators debugging a node; iptables and ipset for `--backend iptables`
# and `podseg cleanup`), and the virtualenv /opt/podseg holding the runtime wheel and its
# dependencies, bytecode compiled. No compiler, no pip, no apt lists, no documentation.
# Everything is world-readable: `podseg responder` runs as uid 65532 from the same image.
set -eu
src=${1:?usage: build-rootfs.sh SRC}
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
umask 022

# Like debian:*-slim: dpkg leaves out documentation, manual pages and translations.
cat > /etc/dpkg/dpkg.cfg.d/podseg-slim <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF

# Versions follow Debian bookworm and its security updates, hence no pins.
# python3-venv only for creating the virtualenv; purged below.
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  python3 python3-venv nftables libnftables1 iproute2 conntrack iptables ipset >/dev/null

# The runtime distribution only (agent/); every dependency ships as a wheel, so no compiler.
python3 -m venv /opt/podseg
/opt/podseg/bin/pip install -q "$src"
site=$(/opt/podseg/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The asyncio flavour of the Kubernetes client is never imported (~68 MB).
rm -rf "$site/kubernetes/aio"
/opt/podseg/bin/python -c "import agent.app, agent.cleanup, agent.dataplane.worker, agent.responder.app"
/opt/podseg/bin/pip uninstall -q -y pip setuptools
/opt/podseg/bin/podseg --version

# No installer is left: neither pip (above) nor the venv module's bundled wheels.
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
apt-get purge -y -qq --auto-remove python3-venv "python$py-venv" python3-pip-whl \
  python3-setuptools-whl >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old \
  /var/log/apt /var/log/dpkg.log /var/log/alternatives.log /root/.cache
# What a base without the dpkg exclusions above already held (debootstrap's minbase).
find /usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
find /usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/* /usr/share/locale/*
