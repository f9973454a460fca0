#!/usr/bin/env python3
"""Builds kraal's test images from scratch and pushes them to a registry over the HTTP API v2.

Usage:
  hack/testimages.py --registry HOST:PORT [--user U --password P] --out images.json
                     [--only NAME[,NAME...]]

Everything is built with the Python standard library from Debian's busybox-static
(/bin/busybox). The images are reproducible: fixed mtimes, gzip without a timestamp and
seeded "random" data, so the same busybox binary always gives the same digests.

--only takes image names as written in images.json ("kraal-test/busybox:latest") or a
short form without the "kraal-test/" prefix; a bare repository name means its "latest" tag
("--only busybox" pushes just kraal-test/busybox:latest, which is what the basic-auth
and the token-auth registries get).

With --user/--password the credentials go as HTTP Basic to the registry; if it answers 401
with a `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge instead, they go
to the realm for a bearer token (for every scope challenged so far) and the request is retried.

images.json maps "repo:tag" to
  {"media_type", "manifest_digest", "config_digest", "layers": [{"digest", "diff_id",
   "size", "media_type"}]}
and, for an image index / Docker manifest list, to
  {"media_type", "manifest_digest" (the index's own digest), "manifests": [{"platform":
   {"os", "architecture"[, "variant"]}, "media_type", "manifest_digest", "config_digest",
   "layers"}]}
plus, when the index has an entry for this machine's platform, "platform",
"config_digest" and "layers" of that entry (what a pull on this machine resolves to).
"""

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

BUSYBOX = "/bin/busybox"
MTIME = 1704067200  # 2024-01-01T00:00:00Z: fixed so the images are reproducible
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

OCI_TYPES = {"manifest": OCI_MANIFEST, "index": OCI_INDEX, "config": OCI_CONFIG,
             "gzip": OCI_LAYER_GZIP}
DOCKER_TYPES = {"manifest": DOCKER_MANIFEST, "index": DOCKER_LIST, "config": DOCKER_CONFIG,
                "gzip": DOCKER_LAYER_GZIP}

APPLETS = [
    "sh", "ash", "echo", "cat", "ls", "sleep", "id", "true", "false", "env", "printf",
    "head", "tail", "wc", "dd", "mkdir", "rm", "touch", "stat", "grep", "sed", "awk", "nc",
    "ps", "kill", "hostname", "mount", "umount", "stty", "date", "seq", "yes", "tr", "top",
    "uname", "whoami", "test", "[", "[[", "cp", "mv", "ln", "chmod", "chown", "readlink",
    "realpath", "basename", "dirname", "pwd", "sort", "uniq", "cut", "xargs", "find",
    "which", "du", "df", "free", "uptime", "pidof", "wget", "vi",
    "md5sum", "sha256sum", "tee", "timeout", "usleep", "watch", "nslookup", "ping",
    "ip", "ifconfig", "netstat", "mktemp", "rmdir", "nproc", "groups", "su",
    "chroot", "getopt", "expr", "less", "more", "od", "hexdump", "base64", "gzip",
    "gunzip", "zcat", "tar", "diff", "cmp", "logger", "dmesg", "sync", "arch",
]

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "kraal:x:1000:1000:kraal:/home/kraal:/bin/sh\n"
)
GROUP = (
    "root:x:0:\n"
    "kraal:x:1000:\n"
    "kraalextra:x:2000:kraal\n"
    "nogroup:x:65534:\n"
)


def die(msg):
    print(f"testimages: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "s390x": "s390x", "ppc64le": "ppc64le", "riscv64": "riscv64"}.get(machine, machine)


# ---------------------------------------------------------------- tar building

class Tar:
    """A tar archive written entry by entry, exactly with the names given."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0):
        info = tarfile.TarInfo()
        info.name = name  # set directly: tarfile writes it as given (no sanitising)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = MTIME
        return info

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name, data, mode=0o644, uid=0, gid=0):
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name, target):
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def hardlink(self, name, target):
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        self.tar.addfile(info)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


class Layer:
    def __init__(self, tar_bytes, compressed=True):
        self.diff_id = sha256(tar_bytes)
        self.compressed = compressed
        if compressed:
            self.blob = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
        else:
            self.blob = tar_bytes
        self.digest = sha256(self.blob)

    def media_type(self, types):
        return types["gzip"] if self.compressed else OCI_LAYER_TAR


def busybox_tree(tar, extra=None):
    """The busybox userland; `extra(tar)` may add entries at the end."""
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    tar.dir("bin")
    tar.file("bin/busybox", busybox, mode=0o755)
    for applet in sorted(set(APPLETS)):
        tar.symlink(f"bin/{applet}", "busybox")
    tar.dir("dev")
    tar.dir("etc")
    tar.file("etc/group", GROUP.encode())
    tar.file("etc/passwd", PASSWD.encode())
    tar.dir("home")
    tar.dir("home/kraal", mode=0o755, uid=1000, gid=1000)
    tar.dir("proc", mode=0o555)
    tar.dir("root", mode=0o700)
    tar.dir("sys", mode=0o555)
    tar.dir("tmp", mode=0o1777)
    if extra:
        extra(tar)
    return tar.bytes()


def small_tree(files):
    tar = Tar()
    for name, data in files:
        tar.file(name, data)
    return tar.bytes()


# ---------------------------------------------------------------- images

def image_config(layers, arch="amd64", variant=None, user=None, labels=None, diff_ids=None,
                 cmd=None):
    config = {"Env": [PATH_ENV], "Cmd": cmd or ["sh"], "WorkingDir": "/"}
    if user is not None:
        config["User"] = user
    if labels:
        config["Labels"] = labels
    doc = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers",
                   "diff_ids": diff_ids if diff_ids is not None else [l.diff_id for l in layers]},
        "history": [{"created": CREATED, "created_by": "hack/testimages.py"} for _ in layers],
    }
    if variant:
        doc["variant"] = variant
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Image:
    """One manifest: config + layers, in OCI or Docker media types."""

    def __init__(self, layers, config, types=OCI_TYPES):
        self.layers, self.config, self.types = layers, config, types
        self.config_digest = sha256(config)
        doc = {
            "schemaVersion": 2,
            "mediaType": types["manifest"],
            "config": {"mediaType": types["config"], "digest": self.config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": l.media_type(types), "digest": l.digest,
                        "size": len(l.blob)} for l in layers],
        }
        self.manifest = json.dumps(doc, indent=2).encode()
        self.media_type = types["manifest"]
        self.digest = sha256(self.manifest)

    def record(self):
        return {
            "media_type": self.media_type,
            "manifest_digest": self.digest,
            "config_digest": self.config_digest,
            "layers": [{"digest": l.digest, "diff_id": l.diff_id, "size": len(l.blob),
                        "media_type": l.media_type(self.types)} for l in self.layers],
        }


class Index:
    """An OCI image index or Docker manifest list over (platform, Image) pairs."""

    def __init__(self, entries, types=OCI_TYPES):
        self.entries, self.types = entries, types
        doc = {
            "schemaVersion": 2,
            "mediaType": types["index"],
            "manifests": [{"mediaType": img.media_type, "digest": img.digest,
                           "size": len(img.manifest), "platform": plat}
                          for plat, img in entries],
        }
        self.manifest = json.dumps(doc, indent=2).encode()
        self.media_type = types["index"]
        self.digest = sha256(self.manifest)

    def record(self):
        out = {"media_type": self.media_type, "manifest_digest": self.digest, "manifests": []}
        for plat, img in self.entries:
            entry = {"platform": plat}
            entry.update(img.record())
            out["manifests"].append(entry)
        for plat, img in self.entries:
            if plat["os"] == "linux" and plat["architecture"] == host_arch():
                out["platform"] = plat
                out["config_digest"] = img.config_digest
                out["layers"] = img.record()["layers"]
                break
        return out


def build_all():
    """Returns [(repo, [tags], Image|Index)] in push order."""
    arch = host_arch()
    busybox = Layer(busybox_tree(Tar()))
    out = []

    # 1. busybox, one manifest under three tags
    out.append(("kraal-test/busybox", ["latest", "1.36", "stable"],
                Image([busybox], image_config([busybox], arch))))

    # 2. non-root users, same layer
    out.append(("kraal-test/nonroot", ["uid"],
                Image([busybox], image_config([busybox], arch, user="1000:1000"))))
    out.append(("kraal-test/nonroot", ["name"],
                Image([busybox], image_config([busybox], arch, user="kraal"))))

    # 3. Docker schema2 (its own config, so its image id differs from busybox's)
    out.append(("kraal-test/docker-v2", ["latest"],
                Image([busybox], image_config([busybox], arch,
                                              labels={"org.kraal.test.image": "docker-v2"}),
                      DOCKER_TYPES)))

    # 4. multi-arch: this machine's platform gets the real busybox, others a marker layer
    def platform_image(arch_name, variant, types):
        if arch_name == arch:
            layers = [busybox]
        else:
            layers = [Layer(small_tree([("kraal-platform", f"{arch_name}\n".encode())]))]
        cfg = image_config(layers, arch_name, variant,
                           labels={"org.kraal.test.platform": arch_name})
        return Image(layers, cfg, types)

    def multiarch(types):
        return Index([
            ({"architecture": "amd64", "os": "linux"},
             platform_image("amd64", None, types)),
            ({"architecture": "arm64", "os": "linux", "variant": "v8"},
             platform_image("arm64", "v8", types)),
        ], types)

    out.append(("kraal-test/multiarch", ["latest"], multiarch(OCI_TYPES)))
    out.append(("kraal-test/multiarch-docker", ["latest"], multiarch(DOCKER_TYPES)))

    # 5. an index with no platform for this machine
    out.append(("kraal-test/noplatform", ["latest"], Index([
        ({"architecture": "s390x", "os": "linux"}, platform_image("s390x", None, OCI_TYPES)),
    ])))

    # 6. whiteouts
    l1 = Tar()
    l1.dir("data")
    l1.file("data/keep", b"keep\n")
    l1.file("data/gone", b"gone\n")
    l1.dir("opaque")
    l1.file("opaque/old", b"old\n")
    l1 = Layer(l1.bytes())
    l2 = Tar()
    l2.dir("data")
    l2.file("data/.wh.gone", b"")
    l2.dir("opaque")
    l2.file("opaque/.wh..wh..opq", b"")
    l2.file("opaque/new", b"new\n")
    l2 = Layer(l2.bytes())
    out.append(("kraal-test/whiteout", ["latest"],
                Image([l1, l2], image_config([l1, l2], arch))))

    # 7. layers that try to escape the root
    def evil(tag, add):
        tar = Tar()
        tar.file("ok", b"ok\n")
        add(tar)
        layer = Layer(tar.bytes())
        out.append(("kraal-test/evil", [tag], Image([layer], image_config([layer], arch))))

    evil("dotdot", lambda t: t.file("../../../../../../../../tmp/kraal-evil-dotdot", b"evil\n"))
    evil("absolute", lambda t: t.file("/tmp/kraal-evil-absolute", b"evil\n"))

    def symlink_escape(t):
        t.symlink("escape", "/tmp")
        t.file("escape/kraal-evil-symlink", b"evil\n")

    evil("symlink", symlink_escape)
    evil("hardlink", lambda t: t.hardlink("link", "../../../../../../../../etc/hostname"))
    evil("hardlink-abs", lambda t: t.hardlink("link", "/etc/hostname"))

    # 8. a busybox with a distinct 8 MiB blob (seeded, so reproducible)
    blob = random.Random(0x6b7261616c).randbytes(8 << 20)
    concurrent = Layer(busybox_tree(Tar(), lambda t: t.file("blob", blob)))
    out.append(("kraal-test/concurrent", ["latest"],
                Image([concurrent], image_config([concurrent], arch))))

    # 9. an uncompressed layer
    # (a marker file keeps its diff id apart from busybox's, so the two never share a layer)
    plain = Layer(busybox_tree(Tar(), lambda t: t.file("kraal-uncompressed", b"uncompressed\n")),
                  compressed=False)
    out.append(("kraal-test/uncompressed", ["latest"],
                Image([plain], image_config([plain], arch))))

    # 10. a valid layer whose config names a wrong diff id
    valid = Layer(small_tree([("ok", b"ok\n"), ("bad-diffid", b"the config lies\n")]))
    wrong = sha256(b"kraal: this is not the diff id of any layer")
    out.append(("kraal-test/bad-diffid", ["latest"],
                Image([valid], image_config([valid], arch, diff_ids=[wrong]))))

    # 11. a pause image for containerd's sandbox_image (hack/bench/pods.sh): the busybox
    # layer, sleeping forever (containerd stops sandboxes with SIGKILL)
    out.append(("kraal-test/pause", ["3.9"],
                Image([busybox], image_config([busybox], arch, cmd=["sleep", "2147483647"],
                                              labels={"org.kraal.test.image": "pause"}))))
    return out


# ---------------------------------------------------------------- registry client

class Registry:
    def __init__(self, host, user=None, password=None):
        self.base = f"http://{host}"
        self.auth = self.basic = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.auth = self.basic = f"Basic {token}"
        self.scopes = {}  # (type, name) -> actions asked of the token server so far
        self.opener = urllib.request.build_opener(NoRedirect)

    def request(self, method, url, body=None, headers=None, ok=(200,)):
        if not url.startswith("http"):
            url = self.base + url
        status, rheaders, data = self.send(method, url, body, headers)
        # Token auth: on a Bearer challenge get a token (basic credentials) and retry once.
        if status == 401 and self.fetch_token(rheaders.get("WWW-Authenticate", "")):
            status, rheaders, data = self.send(method, url, body, headers)
        if status not in ok:
            die(f"{method} {url}: HTTP {status}: {data[:500].decode(errors='replace')}")
        return status, rheaders, data

    def fetch_token(self, challenge):
        """Sets self.auth to a bearer token for every scope challenged so far."""
        kind, _, params = challenge.partition(" ")
        if kind.lower() != "bearer":
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in params:
            return False
        for scope in params.get("scope", "").split():
            rtype, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            have = self.scopes.setdefault((rtype, name), [])
            have += [a for a in actions.split(",") if a and a not in have]
        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", f"{t}:{n}:{','.join(a)}") for (t, n), a in self.scopes.items()]
        url = params["realm"] + ("&" if "?" in params["realm"] else "?")
        url += urllib.parse.urlencode(query)
        req = urllib.request.Request(url)
        if self.basic:
            req.add_header("Authorization", self.basic)
        try:
            with self.opener.open(req, timeout=60) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            die(f"token from {url}: HTTP {err.code}: {err.read()[:500].decode(errors='replace')}")
        except (urllib.error.URLError, OSError, ValueError) as err:
            die(f"token from {url}: {err}")
        token = answer.get("token") or answer.get("access_token")
        if not token:
            die(f"token from {url}: no token in the answer")
        self.auth = f"Bearer {token}"
        return True

    def send(self, method, url, body, headers):
        req = urllib.request.Request(url, data=body, method=method)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        if self.auth:
            req.add_header("Authorization", self.auth)
        if body is not None:
            req.add_header("Content-Length", str(len(body)))
        try:
            with self.opener.open(req, timeout=60) as resp:
                status, rheaders, data = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, rheaders, data = err.code, err.headers, err.read()
        except (urllib.error.URLError, OSError) as err:
            die(f"{method} {url}: {err}")
        return status, rheaders, data

    def push_blob(self, repo, digest, data, mount_from=None):
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404))
        if status == 200:
            return
        url = f"/v2/{repo}/blobs/uploads/"
        if mount_from and mount_from != repo:
            url += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        status, headers, _ = self.request("POST", url, body=b"", ok=(201, 202))
        if status == 201:
            return  # mounted from another repository
        location = headers.get("Location")
        if not location:
            die(f"POST {url}: no Location in the answer")
        location = urllib.parse.urljoin(self.base + "/", location)
        sep = "&" if "?" in location else "?"
        put = f"{location}{sep}digest={urllib.parse.quote(digest)}"
        _, headers, _ = self.request("PUT", put, body=data,
                                     headers={"Content-Type": "application/octet-stream"},
                                     ok=(201,))
        got = headers.get("Docker-Content-Digest")
        if got and got != digest:
            die(f"{repo}: blob pushed as {digest} but the registry says {got}")

    def push_manifest(self, repo, reference, manifest, media_type, digest):
        _, headers, _ = self.request("PUT", f"/v2/{repo}/manifests/{reference}", body=manifest,
                                     headers={"Content-Type": media_type}, ok=(201,))
        got = headers.get("Docker-Content-Digest")
        if got != digest:
            die(f"{repo}:{reference}: manifest pushed as {digest} but the registry says {got}")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def push_image(reg, repo, img, blob_home):
    for layer in img.layers:
        reg.push_blob(repo, layer.digest, layer.blob, blob_home.get(layer.digest))
        blob_home.setdefault(layer.digest, repo)
    reg.push_blob(repo, img.config_digest, img.config, blob_home.get(img.config_digest))
    blob_home.setdefault(img.config_digest, repo)


def push(reg, repo, tags, thing, blob_home):
    if isinstance(thing, Index):
        for _, img in thing.entries:
            push_image(reg, repo, img, blob_home)
            reg.push_manifest(repo, img.digest, img.manifest, img.media_type, img.digest)
    else:
        push_image(reg, repo, thing, blob_home)
    for tag in tags:
        reg.push_manifest(repo, tag, thing.manifest, thing.media_type, thing.digest)


def wanted(only):
    if not only:
        return None
    names = set()
    for name in only.split(","):
        name = name.strip()
        if not name:
            continue
        if not name.startswith("kraal-test/"):
            name = "kraal-test/" + name
        if ":" not in name:
            name += ":latest"
        names.add(name)
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT (plain http)")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--out", required=True, help="where to write images.json")
    parser.add_argument("--only", help="comma-separated image names (see the module doc)")
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        die("--user and --password go together")
    if not os.path.isfile(BUSYBOX):
        die(f"{BUSYBOX} is missing: apt-get install -y busybox-static")

    images = build_all()
    only = wanted(args.only)
    known = {f"{repo}:{tag}" for repo, tags, _ in images for tag in tags}
    if only and not only <= known:
        die(f"--only names unknown images: {', '.join(sorted(only - known))}")

    reg = Registry(args.registry, args.user, args.password)
    records = {}
    blob_home = {}
    for repo, tags, thing in images:
        tags = [t for t in tags if only is None or f"{repo}:{t}" in only]
        if not tags:
            continue
        push(reg, repo, tags, thing, blob_home)
        for tag in tags:
            records[f"{repo}:{tag}"] = thing.record()

    out_dir = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(prefix=".images.", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(records, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"testimages: pushed {len(records)} images to {args.registry}", file=sys.stderr)


if __name__ == "__main__":
    main()
