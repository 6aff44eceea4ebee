#!/usr/bin/env python3
"""Write a single-layer OCI image archive (an OCI image layout in a tar) from a
root filesystem directory, with no registry and no container engine.

    oci-image.py --rootfs DIR --name registry.k8s.io/pause:3.10.2 \
        --entrypoint '["/pause"]' [--cmd '[]'] [--env K=V ...] [--workdir /] \
        [--label K=V ...] [--mtime EPOCH] --out image.tar

The archive imports with `ctr -n k8s.io images import image.tar`: the manifest
carries the image name in the `io.containerd.image.name` annotation (and the tag
in `org.opencontainers.image.ref.name`).  The layer is an uncompressed tar of
DIR; entries are sorted and owned as on disk, so the same tree gives the same
digest when --mtime is given.
"""

import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
import time

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def add_tree(tar: tarfile.TarFile, root: str, mtime) -> None:
    """Add every entry under root (not root itself) with paths relative to it."""

    def walk(rel: str) -> None:
        full = os.path.join(root, rel) if rel else root
        for name in sorted(os.listdir(full)):
            r = os.path.join(rel, name) if rel else name
            p = os.path.join(root, r)
            info = tar.gettarinfo(p, arcname=r)
            info.uname = info.gname = ""
            if mtime is not None:
                info.mtime = mtime
            if info.isreg():
                with open(p, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if stat.S_ISDIR(os.lstat(p).st_mode):
                walk(r)

    walk("")


def blob(tar: tarfile.TarFile, data: bytes, mtime: int) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rootfs", required=True)
    ap.add_argument(
        "--name", required=True, help="full image reference, e.g. registry.k8s.io/pause:3.10.2"
    )
    ap.add_argument("--entrypoint", default="[]", help="JSON list")
    ap.add_argument("--cmd", default="[]", help="JSON list")
    ap.add_argument("--env", action="append", default=[], help="K=V, repeatable")
    ap.add_argument("--label", action="append", default=[], help="K=V, repeatable")
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--user", default="")
    ap.add_argument(
        "--mtime", type=int, default=None, help="clamp every file's mtime (reproducible digest)"
    )
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not os.path.isdir(a.rootfs):
        ap.error(f"--rootfs {a.rootfs} is not a directory")
    env = a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    created = a.mtime if a.mtime is not None else 0
    tag = a.name.rsplit(":", 1)[1] if ":" in a.name.rsplit("/", 1)[-1] else "latest"

    with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(a.out))) as layer:
        with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as lt:
            add_tree(lt, a.rootfs, a.mtime)
        layer.seek(0)
        h = hashlib.sha256()
        for chunk in iter(lambda: layer.read(1 << 20), b""):
            h.update(chunk)
        layer_size = layer.tell()
        layer_digest = h.hexdigest()

        config = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "architecture": ARCH,
            "os": "linux",
            "config": {
                "Entrypoint": json.loads(a.entrypoint) or None,
                "Cmd": json.loads(a.cmd) or None,
                "Env": env,
                "WorkingDir": a.workdir,
                "User": a.user,
                "Labels": dict(kv.split("=", 1) for kv in a.label),
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created_by": "podseg scripts/cluster/oci-image.py"}],
        }
        config["config"] = {k: v for k, v in config["config"].items() if v}

        tmp = a.out + ".tmp"
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
            layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
            info = tarfile.TarInfo("oci-layout")
            info.size, info.mtime = len(layout), created
            out.addfile(info, io.BytesIO(layout))
            info = tarfile.TarInfo(f"blobs/sha256/{layer_digest}")
            info.size, info.mtime, info.mode = layer_size, created, 0o644
            layer.seek(0)
            out.addfile(info, layer)
            cfg = blob(out, json.dumps(config, sort_keys=True).encode(), created)
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": f"sha256:{layer_digest}",
                        "size": layer_size,
                    }
                ],
            }
            man = blob(out, json.dumps(manifest, sort_keys=True).encode(), created)
            index = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        **man,
                        "platform": {"architecture": ARCH, "os": "linux"},
                        "annotations": {
                            "io.containerd.image.name": a.name,
                            "org.opencontainers.image.ref.name": tag,
                        },
                    }
                ],
            }
            data = json.dumps(index, sort_keys=True).encode()
            info = tarfile.TarInfo("index.json")
            info.size, info.mtime = len(data), created
            out.addfile(info, io.BytesIO(data))
        os.replace(tmp, a.out)
    print(f"{a.name} {man['digest']} ({layer_size // 1024} KiB layer) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
