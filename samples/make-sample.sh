#!/usr/bin/env bash
# make-sample.sh - build a small Docker overlay2 data root with real kernel overlay mounts and pack
# it into samples/docker-sample.tar.gz (+ ground truth in samples/truth/, samples/mountinfo.txt).
#
# Usage:   sudo samples/make-sample.sh            (run as root; needs `mount -t overlay`, mknod,
#                                                  trusted.* xattrs, chown)
# Env:     PY=python3 (needs the blake3 module)   O2F_CORPUS_TOOLS=<dir with snapshot.py, expected.py>
#          (default: <repo>/../shared/corpora/docker-a/tools)
#
# Layout mimics Docker Engine 20.10 overlay2 (see shared/corpora/docker-a/README.md):
#   overlay2/<cache-id>/{diff,link,lower,work,committed}, overlay2/l/<26 char> -> ../<id>/diff,
#   <mount-id>-init layers, image/overlay2/{layerdb,imagedb,repositories.json}, containers/<id>/...
# Image layer L1/L2 and every container change are made THROUGH A REAL OVERLAY MOUNT (the kernel
# writes the whiteouts, opaque markers and copy-ups).  The base layer B0 is written directly.
# Everything happens in a private mount namespace under a temp dir that is removed at the end.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "make-sample.sh: must be run as root (it mounts overlayfs, creates whiteout device nodes," >&2
  echo "  sets trusted.* xattrs and chowns files). Try: sudo $0" >&2
  exit 1
fi

# Run in a private mount namespace: mounts can never leak into the host, even if we are killed.
if [ -z "${O2F_SAMPLE_IN_NS:-}" ] && command -v unshare >/dev/null 2>&1 \
   && unshare --mount --propagation private true 2>/dev/null; then
  export O2F_SAMPLE_IN_NS=1
  exec unshare --mount --propagation private -- bash "$0" "$@"
fi

export LC_ALL=C TZ=UTC
umask 022
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PY=${PY:-python3}
TOOLS=${O2F_CORPUS_TOOLS:-$REPO/../shared/corpora/docker-a/tools}
[ -f "$TOOLS/snapshot.py" ] || TOOLS=/work/shared/corpora/docker-a/tools
SNAP=$TOOLS/snapshot.py
EXPECTED=$TOOLS/expected.py
OUTTAR=$HERE/docker-sample.tar.gz

log() { printf '[make-sample] %s\n' "$*" >&2; }
die() { printf '[make-sample] ERROR: %s\n' "$*" >&2; exit 1; }

[ -f "$SNAP" ] && [ -f "$EXPECTED" ] || die "snapshot.py/expected.py not found (set O2F_CORPUS_TOOLS)"
"$PY" -c 'import blake3' 2>/dev/null || die "$PY lacks the blake3 module (pip install blake3)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || die "kernel has no overlay filesystem"
for t in tar gzip mount umount mknod mkfifo sha256sum; do command -v $t >/dev/null || die "missing $t"; done

TMP=$(mktemp -d /tmp/o2f-sample.XXXXXX)
DR=$TMP/var/lib/docker          # the data root, as if it lived at /var/lib/docker
O=$DR/overlay2
OUT=$TMP/out                    # truth + mountinfo, moved into samples/ on success
MOUNTED=()

cleanup() {
  local rc=$? i m
  cd /
  for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do
    m=${MOUNTED[$i]}; [ -n "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if grep -q " $TMP" /proc/self/mountinfo; then
    echo "[make-sample] WARNING: mounts left under $TMP, not deleting it" >&2
  else
    rm -rf "$TMP"
  fi
  [ $rc = 0 ] || echo "[make-sample] FAILED (exit $rc)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------------------------
# helper (ids, xattrs, "docker commit" re-extraction, layer tars, Docker JSON metadata)
# --------------------------------------------------------------------------------------------
H=$TMP/helper.py
cat >"$H" <<'PYEOF'
import base64, datetime, hashlib, io, json, os, stat, sys, tarfile

PFX = 'o2f-sample/'
LAYERS = ['B0', 'L1', 'L2']
CONTAINERS = ['s-web', 's-batch', 's-fresh']
DOCKER_VERSION = '20.10.24+dfsg1'
BASE_CREATED = '2024-01-01T00:00:00Z'
DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

def hx(s): return hashlib.sha256((PFX + s).encode()).hexdigest()
def short(cache_id):   # Docker: 26 upper-case base32 chars of random bytes; here derived from the id
    return base64.b32encode(hashlib.sha256((PFX + 'link/' + cache_id).encode()).digest()[:16]).decode()[:26]

def ids():
    out = {}
    for l in LAYERS:
        c = hx('cache/' + l); out['CACHE_' + l] = c; out['LINK_' + l] = short(c)
    for n in CONTAINERS:
        v = n.replace('-', '_'); mid = hx('mount/' + n)
        out['CID_' + v] = hx('container/' + n); out['MID_' + v] = mid
        out['LINK_' + v] = short(mid); out['LINK_' + v + '_init'] = short(mid + '-init')
    return out

def gojson(o, nl=False):   # encoding/json style: compact, HTML-escaped, raw UTF-8
    s = json.dumps(o, separators=(',', ':'), ensure_ascii=False)
    s = s.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    s = s.replace('\u2028', '\\u2028').replace('\u2029', '\\u2029')
    return (s + ('\n' if nl else '')).encode()

def gotime(ns):
    if ns is None: return '0001-01-01T00:00:00Z'
    s, frac = divmod(int(ns), 10**9)
    t = datetime.datetime.fromtimestamp(s, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
    f = ('%09d' % frac).rstrip('0')
    return t + ('.' + f if f else '') + 'Z'

def wfile(path, data, mode=0o644):
    if isinstance(data, str): data = data.encode()
    with open(path, 'wb') as f: f.write(data)
    os.chmod(path, mode)

def mkd(path, mode):
    os.makedirs(path, exist_ok=True); os.chmod(path, mode)

# ---- xattrs -----------------------------------------------------------------------------
def setx(path, name, value):
    os.setxattr(path, name, value.encode() if isinstance(value, str) else value, follow_symlinks=False)

def walk_bottom_up(root):
    for dp, dns, fns in os.walk(root, topdown=False):
        for n in fns + dns: yield os.path.join(dp, n)
    yield root

def commit_layer(root, epoch):
    """Make a layer diff that was written through an overlay mount look like Docker's re-extracted
    commit tar: separate whiteout inodes, no trusted.overlay.* except opaque, no user.* xattrs
    (the commit tar only carries security.capability), mtimes clamped to the build epoch."""
    epoch = int(epoch)
    for p in list(walk_bottom_up(root)):
        st = os.lstat(p)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and st.st_nlink > 1:   # shared kernel whiteout
            os.unlink(p); os.mknod(p, stat.S_IFCHR | 0, 0); os.chown(p, 0, 0); os.chmod(p, 0)
    for p in walk_bottom_up(root):
        try: names = os.listxattr(p, follow_symlinks=False)
        except OSError: names = []
        for n in names:
            if (n.startswith('trusted.overlay.') and n != 'trusted.overlay.opaque') or n.startswith('user.'):
                os.removexattr(p, n, follow_symlinks=False)
    for p in walk_bottom_up(root):
        st = os.lstat(p)
        if st.st_mtime > epoch:
            os.utime(p, (epoch, epoch), follow_symlinks=False)

def touch_tree(root, epoch):
    for p in walk_bottom_up(root):
        os.utime(p, (int(epoch), int(epoch)), follow_symlinks=False)

# ---- layer tar (what `docker save` / the registry would carry) -----------------------------
def layer_tar(root, all_xattrs):
    """Docker-style layer tar of an overlay2 diff dir: filepath.Walk order, no root entry,
    whiteouts -> '.wh.<name>' (0600 regular), opaque dirs -> '<dir>/.wh..wh..opq',
    hardlinks as link entries, integer mtimes, no uname/gname.  all_xattrs=False keeps only
    security.capability (like Docker's archive package); True keeps every non-overlay xattr (the
    `docker import` input tar of the base layer carried them)."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT, encoding='utf-8', errors='surrogateescape')
    seen = {}
    rootb = os.fsencode(root)
    def xattrs(p):
        out = {}
        for n in os.listxattr(p, follow_symlinks=False):
            if n.startswith('trusted.overlay.'): continue
            if not all_xattrs and n != 'security.capability': continue
            out['SCHILY.xattr.' + n] = os.getxattr(p, n, follow_symlinks=False).decode('utf-8', 'surrogateescape')
        return out
    def add(rel, p, st):
        name = os.fsdecode(rel)
        ti = tarfile.TarInfo(name)
        ti.uid, ti.gid, ti.mtime, ti.mode = st.st_uid, st.st_gid, int(st.st_mtime), stat.S_IMODE(st.st_mode)
        ti.uname = ti.gname = ''
        m = st.st_mode; data = None
        if stat.S_ISCHR(m) and st.st_rdev == 0:
            d, b = os.path.split(rel)
            ti.name = os.fsdecode(os.path.join(d, b'.wh.' + b)); ti.type = tarfile.REGTYPE; ti.mode = 0o600; ti.size = 0
            tf.addfile(ti); return
        ti.pax_headers = xattrs(p)
        if stat.S_ISDIR(m): ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(m): ti.type = tarfile.SYMTYPE; ti.linkname = os.fsdecode(os.readlink(p))
        elif stat.S_ISFIFO(m): ti.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISREG(m):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                ti.type = tarfile.LNKTYPE; ti.linkname = seen[key]
            else:
                seen[key] = name; ti.size = st.st_size
                with open(p, 'rb') as f: data = f.read()
        elif stat.S_ISSOCK(m): return
        tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        if stat.S_ISDIR(m):
            try: op = os.getxattr(p, 'trusted.overlay.opaque', follow_symlinks=False)
            except OSError: op = b''
            if op == b'y':
                wo = tarfile.TarInfo(os.fsdecode(os.path.join(rel, b'.wh..wh..opq')))
                wo.mode = stat.S_IMODE(st.st_mode); wo.uid, wo.gid = st.st_uid, st.st_gid; wo.mtime = 0
                wo.uname = wo.gname = ''
                tf.addfile(wo)
    def walk(rel):
        full = os.path.join(rootb, rel) if rel else rootb
        for n in sorted(os.listdir(full)):
            r = os.path.join(rel, n) if rel else n
            p = os.path.join(rootb, r); st = os.lstat(p)
            add(r, p, st)
            if stat.S_ISDIR(st.st_mode): walk(r)
    walk(b'')
    tf.close()
    return buf.getvalue()

def dir_size(root):   # moby pkg/directory.Size: non-dir, non-empty entries, hardlinks counted once
    seen, total = set(), 0
    for dp, dns, fns in os.walk(root):
        for n in fns:
            st = os.lstat(os.path.join(dp, n))
            if st.st_size == 0 or st.st_ino in seen: continue
            seen.add(st.st_ino); total += st.st_size
    return total

# ---- images ------------------------------------------------------------------------------
def empty_cfg():
    return {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
            "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
            "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
            "OnBuild": None, "Labels": None}

L1_RUN = ("set -e; cd /srv/data; echo 'appended in L1' >> img-modify.txt; chmod 0600 img-chmod.txt; "
          "chown 1000:1000 img-chown.txt; rm img-delete.txt; rm -rf img-delete-dir; "
          "rm -rf img-opaque && mkdir img-opaque && echo 'new after opaque (L1)' > img-opaque/new.txt; "
          "mv img-rename.txt img-renamed.txt; mkdir -p /opt/app/plugins; echo alpha > /opt/app/plugins/alpha.txt; "
          "echo beta > /opt/app/plugins/beta.txt; echo 'mode=production' > /opt/app/app.conf")
L2_RUN = ("set -e; rm /opt/app/plugins/beta.txt; mkdir -p /srv/img-new; cd /srv/img-new; "
          "echo 'added in L2' > added.txt; echo 'hardlinked in L2' > hl-a; ln hl-a hl-b; "
          "printf '#!/bin/sh\\necho \"run $1\"\\n' > /opt/app/run.sh; chmod 0755 /opt/app/run.sh; "
          "ln -s run.sh /opt/app/current; echo 'Welcome to sample/app:1' > /etc/motd")
STEPS = [  # (kind, argument, layer, created) - legacy builder, one image per step
    ('RUN', L1_RUN, 'L1', '2024-02-01T00:00:00Z'),
    ('RUN', L2_RUN, 'L2', '2024-02-01T00:05:00Z'),
    ('WORKDIR', '/opt/app', None, '2024-02-01T00:05:01Z'),
    ('CMD', ['/bin/sleep', '1000000'], None, '2024-02-01T00:05:02Z'),
]

def chain_ids(diff_ids):
    out = []
    for i, d in enumerate(diff_ids):
        out.append(d if i == 0 else 'sha256:' + hashlib.sha256((out[-1] + ' ' + d).encode()).hexdigest())
    return out

def images(dr, tardir):
    o = os.path.join(dr, 'overlay2'); idb = os.path.join(dr, 'image/overlay2')
    I = ids(); diff, size = {}, {}
    for l in LAYERS:
        data = layer_tar(os.path.join(o, I['CACHE_' + l], 'diff'), all_xattrs=(l == 'B0'))
        diff[l] = 'sha256:' + hashlib.sha256(data).hexdigest()
        size[l] = dir_size(os.path.join(o, I['CACHE_' + l], 'diff'))
        wfile(os.path.join(tardir, l + '.tar'), data)
    dids = [diff[l] for l in LAYERS]; cids = chain_ids(dids)
    for i, l in enumerate(LAYERS):
        d = os.path.join(idb, 'layerdb/sha256', cids[i].split(':')[1]); mkd(d, 0o700)
        wfile(os.path.join(d, 'cache-id'), I['CACHE_' + l]); wfile(os.path.join(d, 'diff'), dids[i])
        wfile(os.path.join(d, 'size'), str(size[l]))
        if i: wfile(os.path.join(d, 'parent'), cids[i - 1])
    content = os.path.join(idb, 'imagedb/content/sha256'); meta = os.path.join(idb, 'imagedb/metadata/sha256')
    mkd(content, 0o700); mkd(meta, 0o700)
    def store(cfg, parent=None, tagged=False, updated=None):
        b = gojson(cfg); iid = hashlib.sha256(b).hexdigest()
        wfile(os.path.join(content, iid), b, 0o600)
        if parent or tagged: mkd(os.path.join(meta, iid), 0o700)
        if parent: wfile(os.path.join(meta, iid, 'parent'), 'sha256:' + parent, 0o600)
        if tagged: wfile(os.path.join(meta, iid, 'lastUpdated'), updated, 0o600)
        return iid
    # sample/base:1 = `docker import -m 'o2f sample base rootfs' -c 'CMD ["/bin/sh"]' rootfs.tar`
    c = empty_cfg(); c['Cmd'] = ['/bin/sh']
    base = {"architecture": "amd64", "comment": "o2f sample base rootfs", "config": c,
            "container_config": empty_cfg(), "created": BASE_CREATED, "docker_version": DOCKER_VERSION,
            "history": [{"created": BASE_CREATED, "comment": "o2f sample base rootfs"}], "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff['B0']]}}
    base_id = store(base, tagged=True, updated='2024-01-01T00:00:00.000000001Z')
    rows = [('sample/base:1', base_id, None, BASE_CREATED, ['B0'])]
    parent, pcfg, hist, layers = base_id, base, list(base['history']), ['B0']
    for n, (kind, arg, layer, created) in enumerate(STEPS):
        cfg = json.loads(json.dumps(pcfg['config'])); cfg['Image'] = 'sha256:' + parent
        cc = json.loads(json.dumps(cfg)); bid = hx('build/%d' % n); cc['Hostname'] = bid[:12]
        if kind == 'RUN':
            cc['Cmd'] = ['/bin/sh', '-c', arg]; h = {"created": created, "created_by": '/bin/sh -c ' + arg}
            layers = layers + [layer]
        elif kind == 'WORKDIR':
            cfg['WorkingDir'] = cc['WorkingDir'] = arg
            cc['Cmd'] = ['/bin/sh', '-c', '#(nop) ', 'WORKDIR ' + arg]
            h = {"created": created, "created_by": '/bin/sh -c #(nop) WORKDIR ' + arg, "empty_layer": True}
        else:
            cmd = 'CMD [' + ' '.join('"%s"' % a for a in arg) + ']'
            cfg['Cmd'] = cc['Cmd'] = arg; cc['Cmd'] = ['/bin/sh', '-c', '#(nop) ', cmd]
            h = {"created": created, "created_by": '/bin/sh -c #(nop)  ' + cmd, "empty_layer": True}
        hist = hist + [h]
        img = {"architecture": "amd64", "config": cfg, "container": bid, "container_config": cc,
               "created": created, "docker_version": DOCKER_VERSION, "history": hist, "os": "linux",
               "rootfs": {"type": "layers", "diff_ids": [diff[l] for l in layers]}}
        last = n == len(STEPS) - 1
        iid = store(img, parent=parent, tagged=last, updated=created.replace('Z', '.000000001Z'))
        rows.append(('sample/app:1' if last else '-', iid, parent, created, list(layers)))
        parent, pcfg = iid, img
    app_id = parent
    wfile(os.path.join(idb, 'repositories.json'), gojson({"Repositories": {
        "sample/app": {"sample/app:1": 'sha256:' + app_id},
        "sample/base": {"sample/base:1": 'sha256:' + base_id}}}), 0o600)
    # truth/images.tsv
    t = ['#image_id\trepo_tags\tparent\tcreated\tdiff_ids\tchain_ids\tcache_ids']
    for tag, iid, par, created, ls in rows:
        d = [diff[l] for l in ls]
        t.append('\t'.join(['sha256:' + iid, tag, 'sha256:' + par if par else '-', created, ','.join(d),
                            ','.join(chain_ids(d)), ','.join(I['CACHE_' + l] for l in ls)]))
    wfile(os.path.join(tardir, 'images.tsv'), '\n'.join(t) + '\n')
    v = {'IMG_BASE': 'sha256:' + base_id, 'IMG_APP': 'sha256:' + app_id, 'TOP_CHAIN': cids[-1]}
    for i, l in enumerate(LAYERS):
        v['DIFF_' + l] = dids[i]; v['CHAIN_' + l] = cids[i]
    return v

# ---- containers --------------------------------------------------------------------------
HOSTCONFIG = '{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"json-file","Config":{}},"NetworkMode":"none","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"CapAdd":null,"CapDrop":null,"CgroupnsMode":"host","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"private","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":67108864,"Runtime":"runc","ConsoleSize":[0,0],"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":null,"BlkioDeviceWriteBps":null,"BlkioDeviceReadIOps":null,"BlkioDeviceWriteIOps":null,"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"KernelMemory":0,"KernelMemoryTCP":0,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":null,"OomKillDisable":false,"PidsLimit":null,"Ulimits":null,"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":["/proc/asound","/proc/acpi","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/proc/scsi","/sys/firmware"],"ReadonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]}\n'
HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n'
RESOLV = 'nameserver 198.51.100.53\n'
CPLAN = {
    's-web':   dict(cmd=['/bin/sleep', '1000000'], stdin=False, pid=4242, exit=0, log=[],
                    hosts_extra='10.9.8.7 injected.example\n'),
    's-batch': dict(cmd=['/opt/app/run.sh', 'batch'], stdin=True, pid=0, exit=2,
                    log=[('stdout', 's-batch: starting batch run\n'), ('stderr', 's-batch: result written, exiting with status 2\n')]),
    's-fresh': dict(cmd=['/bin/sleep', '1000000'], stdin=False, pid=0, exit=0, log=[]),
}

def container(dr, name, state, image_id, top_chain, created, started, finished):
    I = ids(); v = name.replace('-', '_'); cid, mid = I['CID_' + v], I['MID_' + v]; p = CPLAN[name]
    created = int(created); started = int(started) if started != '-' else None
    finished = int(finished) if finished != '-' else None
    m = os.path.join(dr, 'image/overlay2/layerdb/mounts', cid); mkd(m, 0o755)
    wfile(os.path.join(m, 'mount-id'), mid); wfile(os.path.join(m, 'init-id'), mid + '-init')
    wfile(os.path.join(m, 'parent'), top_chain)
    cd = os.path.join(dr, 'containers', cid); mkd(cd, 0o710); mkd(os.path.join(cd, 'checkpoints'), 0o700)
    ran = state != 'created'
    root = '/var/lib/docker/containers/' + cid + '/'
    sbx = hx('sandbox/' + name) if ran else ''
    net = {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": hx('network/none') if ran else '',
           "EndpointID": hx('endpoint/' + name) if state == 'running' else '', "Gateway": "", "IPAddress": "",
           "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
           "MacAddress": "", "DriverOpts": None, "IPAMOperational": False}
    cfg = {"Hostname": cid[:12], "Domainname": "", "User": "", "AttachStdin": p['stdin'],
           "AttachStdout": p['stdin'] or not ran, "AttachStderr": p['stdin'] or not ran, "Tty": False,
           "OpenStdin": p['stdin'], "StdinOnce": p['stdin'], "Env": [DEFAULT_PATH], "Cmd": p['cmd'],
           "Image": "sample/app:1", "Volumes": None, "WorkingDir": "/opt/app", "Entrypoint": None,
           "OnBuild": None, "Labels": {}}
    doc = {"StreamConfig": {},
           "State": {"Running": state == 'running', "Paused": False, "Restarting": False, "OOMKilled": False,
                     "RemovalInProgress": False, "Dead": False, "Pid": p['pid'] if state == 'running' else 0,
                     "ExitCode": p['exit'] if state == 'exited' else 0, "Error": "",
                     "StartedAt": gotime(started), "FinishedAt": gotime(finished), "Health": None},
           "ID": cid, "Created": gotime(created), "Managed": False, "Path": p['cmd'][0], "Args": p['cmd'][1:],
           "Config": cfg, "Image": image_id,
           "NetworkSettings": {"Bridge": "", "SandboxID": sbx, "HairpinMode": False, "LinkLocalIPv6Address": "",
                               "LinkLocalIPv6PrefixLen": 0, "Networks": {"none": net}, "Service": None,
                               "Ports": {} if state == 'running' else None,
                               "SandboxKey": '/var/run/docker/netns/' + sbx[:12] if ran else '',
                               "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
                               "IsAnonymousEndpoint": False, "HasSwarmEndpoint": False},
           "LogPath": root + cid + '-json.log' if ran else '', "Name": '/' + name, "Driver": "overlay2",
           "OS": "linux", "MountLabel": "", "ProcessLabel": "", "RestartCount": 0,
           "HasBeenStartedBefore": ran, "HasBeenManuallyStopped": False, "MountPoints": {},
           "SecretReferences": None, "ConfigReferences": None, "AppArmorProfile": "",
           "HostnamePath": root + 'hostname' if ran else '', "HostsPath": root + 'hosts' if ran else '',
           "ShmPath": "", "ResolvConfPath": root + 'resolv.conf' if ran else '', "SeccompProfile": "",
           "NoNewPrivileges": False, "LocalLogCacheMeta": {"HaveNotifyEnabled": False}}
    wfile(os.path.join(cd, 'config.v2.json'), gojson(doc, nl=True), 0o600)
    wfile(os.path.join(cd, 'hostconfig.json'), HOSTCONFIG, 0o644)
    if ran:
        mkd(os.path.join(cd, 'mounts'), 0o710)
        wfile(os.path.join(cd, 'hostname'), cid[:12] + '\n')
        wfile(os.path.join(cd, 'hosts'), HOSTS + p.get('hosts_extra', ''))
        wfile(os.path.join(cd, 'resolv.conf'), RESOLV)
        wfile(os.path.join(cd, 'resolv.conf.hash'), 'sha256:' + hashlib.sha256(RESOLV.encode()).hexdigest())
        lines, t = [], started
        for stream, text in p['log']:
            t += 1234567
            lines.append(gojson({"log": text, "stream": stream, "time": gotime(t)}, nl=True))
        wfile(os.path.join(cd, cid + '-json.log'), b''.join(lines), 0o640)

def mountinfo(dr, line, out):
    """Rewrite one real /proc/self/mountinfo overlay line as if the data root were /var/lib/docker
    (Docker passes absolute l/ paths when they fit in a page), and add typical host lines."""
    pre, post = line.rstrip('\n').split(' - ', 1)
    f = pre.split(' '); fstype, src, sopts = post.split(' ', 2)
    base = '/var/lib/docker/overlay2/'
    mp = f[4].replace(dr, '/var/lib/docker')
    opts = []
    for o in sopts.split(','):
        k, _, val = o.partition('=')
        if k == 'lowerdir':
            val = ':'.join(x.replace(dr + '/overlay2/', base) if x.startswith('/') else base + x for x in val.split(':'))
        elif k in ('upperdir', 'workdir'):
            val = val.replace(dr + '/overlay2/', base) if val.startswith('/') else base + val
        opts.append(k + ('=' + val if _ else ''))
    ov = ' '.join(['50', '42', f[2], f[3], mp, f[5], 'shared:2', '-', fstype, src, ','.join(opts)])
    host = [
        '22 27 0:21 / /proc rw,relatime - proc proc rw',
        '23 27 0:22 / /sys rw,relatime - sysfs sysfs rw',
        '24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=4012345k,nr_inodes=1003086,mode=755',
        '25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=8024690k',
        '26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000',
        '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard',
        '31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw',
        '42 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vda rw,discard',
        ov,
        '96 27 0:4 net:[4026532181] /run/docker/netns/%s rw - nsfs nsfs rw' % hx('sandbox/s-web')[:12],
    ]
    wfile(out, '\n'.join(host) + '\n')

if __name__ == '__main__':
    a = sys.argv[1:]
    if a[0] == 'ids':
        for k, v in ids().items(): print('%s=%s' % (k, v))
    elif a[0] == 'setx': setx(a[1], a[2], a[3])
    elif a[0] == 'commit-layer': commit_layer(a[1], a[2])
    elif a[0] == 'touch-tree': touch_tree(a[1], a[2])
    elif a[0] == 'images':
        for k, v in images(a[1], a[2]).items(): print('%s=%s' % (k, v))
    elif a[0] == 'container': container(*a[1:])
    elif a[0] == 'mountinfo': mountinfo(a[1], open(a[2]).read(), a[3])
    else: raise SystemExit('bad helper command %r' % a)
PYEOF
hp() { "$PY" "$H" "$@"; }
setx() { hp setx "$@"; }
now_ns() { date +%s%N; }

eval "$(hp ids)"
INIT_web=$MID_s_web-init; INIT_batch=$MID_s_batch-init; INIT_fresh=$MID_s_fresh-init

# --------------------------------------------------------------------------------------------
# data root skeleton + overlay2 layer helpers (modes as dockerd creates them)
# --------------------------------------------------------------------------------------------
mkdir -p "$OUT/truth/images" "$OUT/truth/layers" "$TMP/mnt" "$TMP/tars"
install -d -m 0710 "$DR" "$O" "$DR/containers"
install -d -m 0700 "$O/l" "$DR/image" "$DR/image/overlay2" "$DR/image/overlay2/layerdb" \
  "$DR/image/overlay2/imagedb" "$DR/image/overlay2/distribution" "$DR/tmp" "$DR/runtimes" \
  "$DR/swarm" "$DR/trust" "$DR/plugins" "$DR/plugins/tmp"
install -d -m 0755 "$DR/image/overlay2/layerdb/sha256" "$DR/image/overlay2/layerdb/mounts" \
  "$DR/image/overlay2/layerdb/tmp" "$DR/plugins/storage" "$DR/plugins/storage/ingest"
install -d -m 0701 "$DR/volumes"
mknod -m 0600 "$DR/volumes/backingFsBlockDev" b 254 0
install -d -m 0750 "$DR/network" "$DR/network/files"

# mklayer ID LINK [LOWER]  -> overlay2/ID/{diff,link[,lower,work]} and l/LINK -> ../ID/diff
mklayer() {
  local id=$1 link=$2 lower=${3:-}
  install -d -m 0710 "$O/$id"; install -d -m 0755 "$O/$id/diff"
  printf '%s' "$link" >"$O/$id/link"
  ln -s "../$id/diff" "$O/l/$link"
  if [ -n "$lower" ]; then printf '%s' "$lower" >"$O/$id/lower"; install -d -m 0700 "$O/$id/work"; fi
}
committed() { install -m 0600 /dev/null "$O/$1/committed"; }
# ovl_mount ID : mount like dockerd's overlay2 driver does when it chdirs into overlay2/ (relative
# l/ lowerdirs, upperdir=ID/diff, workdir=ID/work, target ID/merged)
ovl_mount() {
  local id=$1 lower
  lower=$(cat "$O/$id/lower")
  install -d -m 0700 "$O/$id/merged"
  (cd "$O" && mount -t overlay overlay -o "index=off,lowerdir=$lower,upperdir=$id/diff,workdir=$id/work" "$id/merged")
  MOUNTED+=("$O/$id/merged")
}
ovl_umount() {
  local id=$1 i
  umount "$O/$id/merged"; rmdir "$O/$id/merged"
  for i in "${!MOUNTED[@]}"; do [ "${MOUNTED[$i]}" != "$O/$id/merged" ] || MOUNTED[$i]=""; done
}
# ro_mount DIR LOWER... : read-only merged view (no upper) for ground truth
ro_mount() {
  local dir=$1; shift
  local IFS=:
  mkdir -p "$dir"
  mount -t overlay overlay -o "ro,lowerdir=$*" "$dir"
  MOUNTED+=("$dir")
}
ro_umount() { local i; umount "$1"; for i in "${!MOUNTED[@]}"; do [ "${MOUNTED[$i]}" != "$1" ] || MOUNTED[$i]=""; done; }
snap() { "$PY" "$SNAP" dir "$1"; }

# --------------------------------------------------------------------------------------------
# B0: base layer of sample/base:1, written directly (as `docker import` would extract it)
# --------------------------------------------------------------------------------------------
log "B0 base layer"
mklayer "$CACHE_B0" "$LINK_B0"
B=$O/$CACHE_B0/diff
install -d -m 0755 "$B"/{bin,dev,etc,home,proc,run,sys,usr,usr/bin,usr/share,usr/share/hl,srv,srv/data,srv/links,var,var/log}
install -d -m 0700 "$B/root"; install -d -m 1777 "$B/tmp"
install -d -m 0750 -o 1000 -g 1000 "$B/home/alice"
printf '#!/bin/true\n# o2f sample: placeholder for /bin/sh (not a real shell)\n' >"$B/bin/sh"; chmod 0755 "$B/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$B/etc/passwd"
printf 'root:x:0:\nshadow:x:42:\nalice:x:1000:\nnogroup:x:65534:\n' >"$B/etc/group"
printf 'root:*:19723:0:99999:7:::\nalice:!:19723:0:99999:7:::\nnobody:*:19723:0:99999:7:::\n' >"$B/etc/shadow"
chown 0:42 "$B/etc/shadow"; chmod 0640 "$B/etc/shadow"
printf 'Welcome to sample/base:1\n' >"$B/etc/motd"
ln -s /proc/mounts "$B/etc/mtab"
printf 'alice private notes\n' >"$B/home/alice/notes.txt"; chown 1000:1000 "$B/home/alice/notes.txt"; chmod 0600 "$B/home/alice/notes.txt"
mkfifo -m 0644 "$B/run/base.fifo"
printf '#!/bin/sh\necho suid\n' >"$B/usr/bin/suid-tool"; chmod 4755 "$B/usr/bin/suid-tool"
printf 'hardlinked in base layer\n' >"$B/usr/share/hl/one"; ln "$B/usr/share/hl/one" "$B/usr/share/hl/two"
printf 'app log line 1\n' >"$B/var/log/app.log"
D=$B/srv/data
mkdir -p "$D"/{sub,img-delete-dir/b,img-opaque/sub,ctr-delete-dir/y,ctr-opaque/sub,ctr-rename-dir/sub}
printf 'sample data, never changed\n' >"$D/readme.txt"
printf 'deep file\n' >"$D/sub/deep.txt"
printf 'base file with user xattrs\n' >"$D/user-xattr.txt"
setx "$D/user-xattr.txt" user.origin base-layer; setx "$D/user-xattr.txt" user.sample o2f
for f in img-modify img-chmod img-chown img-delete img-rename; do printf '%s: base content\n' "$f" >"$D/$f.txt"; done
printf 'a\n' >"$D/img-delete-dir/a.txt"; printf 'c\n' >"$D/img-delete-dir/b/c.txt"
printf 'old1\n' >"$D/img-opaque/old1.txt"; printf 'old2\n' >"$D/img-opaque/sub/old2.txt"
for f in ctr-modify ctr-chmod ctr-chown ctr-touch ctr-delete ctr-rename ctr-hl-src ctr-xattr ctr-shared; do
  printf '%s: base content\n' "$f" >"$D/$f.txt"
done
printf 'same-size v1\n' >"$D/ctr-samesize.txt"
printf 'x\n' >"$D/ctr-delete-dir/x.txt"; printf 'z\n' >"$D/ctr-delete-dir/y/z.txt"
printf 'old1\n' >"$D/ctr-opaque/old1.txt"; printf 'old2\n' >"$D/ctr-opaque/sub/old2.txt"
printf 'f1\n' >"$D/ctr-rename-dir/f1.txt"; printf 'f2\n' >"$D/ctr-rename-dir/sub/f2.txt"
ln -s ../data/sub/deep.txt "$B/srv/links/rel"
ln -s /etc/shadow "$B/srv/links/shadow"
ln -s /nonexistent/target "$B/srv/links/dangling"
hp touch-tree "$B" 1704067200          # 2024-01-01T00:00:00Z, every entry incl. symlinks
committed "$CACHE_B0"

# --------------------------------------------------------------------------------------------
# L1, L2: image layers of sample/app:1, written through an overlay mount (upper = the layer's
# diff), then "re-extracted" (docker commit semantics) and clamped to the build time
# --------------------------------------------------------------------------------------------
log "L1 image layer (overlay)"
mklayer "$CACHE_L1" "$LINK_L1" "l/$LINK_B0"
ovl_mount "$CACHE_L1"; M=$O/$CACHE_L1/merged
( cd "$M/srv/data"
  echo 'appended in L1' >>img-modify.txt
  chmod 0600 img-chmod.txt
  chown 1000:1000 img-chown.txt
  rm img-delete.txt
  rm -rf img-delete-dir
  rm -rf img-opaque && mkdir img-opaque && echo 'new after opaque (L1)' >img-opaque/new.txt
  mv img-rename.txt img-renamed.txt
  mkdir -p "$M/opt/app/plugins"; echo alpha >"$M/opt/app/plugins/alpha.txt"; echo beta >"$M/opt/app/plugins/beta.txt"
  echo 'mode=production' >"$M/opt/app/app.conf" )
ovl_umount "$CACHE_L1"
rm -rf "$O/$CACHE_L1/work/work"
hp commit-layer "$O/$CACHE_L1/diff" 1706745600      # 2024-02-01T00:00:00Z
committed "$CACHE_L1"

log "L2 image layer (overlay)"
mklayer "$CACHE_L2" "$LINK_L2" "l/$LINK_L1:l/$LINK_B0"
ovl_mount "$CACHE_L2"; M=$O/$CACHE_L2/merged
( rm "$M/opt/app/plugins/beta.txt"
  mkdir -p "$M/srv/img-new"; cd "$M/srv/img-new"
  echo 'added in L2' >added.txt; echo 'hardlinked in L2' >hl-a; ln hl-a hl-b
  printf '#!/bin/sh\necho "run $1"\n' >"$M/opt/app/run.sh"; chmod 0755 "$M/opt/app/run.sh"
  ln -s run.sh "$M/opt/app/current"
  echo 'Welcome to sample/app:1' >"$M/etc/motd" )
ovl_umount "$CACHE_L2"
rm -rf "$O/$CACHE_L2/work/work"
hp commit-layer "$O/$CACHE_L2/diff" 1706745900      # 2024-02-01T00:05:00Z
committed "$CACHE_L2"

log "image metadata"
eval "$(hp images "$DR" "$TMP/tars")"
IMAGE_LOWER="l/$LINK_L2:l/$LINK_L1:l/$LINK_B0"

# --------------------------------------------------------------------------------------------
# containers: -init layer (populated through a mount, like daemon/initlayer.Setup), RW layer
# mounted once at `docker create`, then again at start; changes made in merged/
# --------------------------------------------------------------------------------------------
init_setup() {   # moby daemon/initlayer.Setup, applied to a mounted merged dir
  local m=$1 pth typ prev p
  for pth in /dev/pts:dir /dev/shm:dir /proc:dir /sys:dir /.dockerenv:file /etc/resolv.conf:file \
             /etc/hosts:file /etc/hostname:file /dev/console:file /etc/mtab:/proc/mounts; do
    typ=${pth#*:}; pth=${pth%%:*}; prev=""
    for p in ${pth//\// }; do prev=$prev/$p; unlink "$m$prev" 2>/dev/null || true; done
    if [ ! -e "$m$pth" ]; then
      [ -d "$m$(dirname "$pth")" ] || install -d -m 0755 "$m$(dirname "$pth")"
      case $typ in
        dir) mkdir -m 0755 "$m$pth" ;;
        file) : >"$m$pth"; chmod 0755 "$m$pth" ;;
        *) ln -s "$typ" "$m$pth" ;;
      esac
    fi
  done
}
declare -A CREATED STARTED FINISHED
create_container() {   # name mount-id init-link rw-link
  local name=$1 mid=$2 ilink=$3 rlink=$4
  CREATED[$name]=$(now_ns)
  mklayer "$mid-init" "$ilink" "$IMAGE_LOWER"
  ovl_mount "$mid-init"; init_setup "$O/$mid-init/merged"; ovl_umount "$mid-init"
  committed "$mid-init"
  mklayer "$mid" "$rlink" "l/$ilink:$IMAGE_LOWER"
  ovl_mount "$mid"; ovl_umount "$mid"      # docker create mounts the rootfs once (workdir/volume setup)
}

log "containers"
create_container s-web "$MID_s_web" "$LINK_s_web_init" "$LINK_s_web"
create_container s-batch "$MID_s_batch" "$LINK_s_batch_init" "$LINK_s_batch"
create_container s-fresh "$MID_s_fresh" "$LINK_s_fresh_init" "$LINK_s_fresh"

# ---- s-web: running; the main scenario set --------------------------------------------------
log "s-web scenarios"
STARTED[s-web]=$(now_ns)
ovl_mount "$MID_s_web"; M=$O/$MID_s_web/merged
( cd "$M/srv/data"
  echo 'added by s-web' >ctr-added.txt
  echo 'appended by s-web' >>ctr-modify.txt
  touch -r ctr-samesize.txt "$TMP/stamp"; printf 'same-size v2\n' >ctr-samesize.txt; touch -r "$TMP/stamp" ctr-samesize.txt
  chmod 0600 ctr-chmod.txt
  chown 1000:1000 ctr-chown.txt
  touch -d '2021-03-04 05:06:07' ctr-touch.txt
  rm ctr-delete.txt
  rm -rf ctr-delete-dir
  rm -rf ctr-opaque && mkdir ctr-opaque && echo 'fresh after opaque' >ctr-opaque/fresh.txt
  mv ctr-rename.txt ctr-renamed.txt
  mv ctr-rename-dir ctr-renamed-dir
  ln ctr-hl-src.txt ctr-hl-link.txt
  "$PY" "$H" setx ctr-xattr.txt user.forensic s-web
  echo 'appended by s-web' >>ctr-shared.txt
  echo 'modified through name one' >>"$M/usr/share/hl/one"
  rm "$M/opt/app/plugins/alpha.txt"
  echo 'eve:x:0:0:backdoor:/root:/bin/sh' >>"$M/etc/passwd"
  echo ghost >"$M/tmp/ghost.txt"; rm "$M/tmp/ghost.txt"
  mkdir "$M/srv/web"; cd "$M/srv/web"
  ln -s ../data/readme.txt rel-link; ln -s /etc/passwd abs-link
  ln -s /missing/nowhere dangling-link; ln -s /etc/shadow shadow-link
  echo 'new hardlinked file' >new-hl-a; ln new-hl-a new-hl-b
  mkfifo my.fifo
  mkdir empty-dir
  : >"$(printf 'bad\377.txt')"
  : >"$(printf 'new\nline.txt')"
  : >"$(printf 'tab\there.txt')"
  : >'back\slash.txt'
  : >.wh.evil )
# s-web stays mounted ("running") until the data root has been tarred

# ---- s-batch: exited with code 2 -----------------------------------------------------------
log "s-batch scenarios"
STARTED[s-batch]=$(now_ns)
ovl_mount "$MID_s_batch"; M=$O/$MID_s_batch/merged
( mkdir -p "$M/srv/batch/out"; echo 'batch result' >"$M/srv/batch/out/result.txt"
  echo 'batch: run 1 finished' >>"$M/var/log/app.log"
  rm "$M/srv/data/ctr-shared.txt"
  echo 'appended by s-batch' >>"$M/srv/data/ctr-modify.txt"
  rm -rf "$M/opt/app/plugins" && mkdir "$M/opt/app/plugins" && echo gamma >"$M/opt/app/plugins/gamma.txt"
  mv "$M/srv/img-new/hl-b" "$M/srv/img-new/hl-b.moved"
  rm "$M/etc/motd"
  chmod 0644 "$M/etc/shadow" )
FINISHED[s-batch]=$(now_ns)

# ---- Docker metadata of the containers -------------------------------------------------------
hp container "$DR" s-web running "$IMG_APP" "$TOP_CHAIN" "${CREATED[s-web]}" "${STARTED[s-web]}" -
hp container "$DR" s-batch exited "$IMG_APP" "$TOP_CHAIN" "${CREATED[s-batch]}" "${STARTED[s-batch]}" "${FINISHED[s-batch]}"
hp container "$DR" s-fresh created "$IMG_APP" "$TOP_CHAIN" "${CREATED[s-fresh]}" - -

# --------------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------------
log "ground truth"
T=$OUT/truth
snap "$O/$MID_s_web/merged" >"$T/s-web.merged.tsv"          # the live RW mount
grep " $O/$MID_s_web/merged " /proc/self/mountinfo >"$TMP/web.mountinfo" || die "s-web mount not in mountinfo"
hp mountinfo "$DR" "$TMP/web.mountinfo" "$OUT/mountinfo.txt"
ovl_umount "$MID_s_batch"                                     # s-batch exits
L_IMG="$O/$CACHE_L2/diff $O/$CACHE_L1/diff $O/$CACHE_B0/diff"
for n in s-batch s-fresh; do
  v=${n//-/_}; eval "mid=\$MID_$v"
  ro_mount "$TMP/mnt/$n" "$O/$mid/diff" "$O/$mid-init/diff" $L_IMG
  snap "$TMP/mnt/$n" >"$T/$n.merged.tsv"; ro_umount "$TMP/mnt/$n"
done
ro_mount "$TMP/mnt/app" $L_IMG
snap "$TMP/mnt/app" >"$T/images/sample_app_1.view.tsv"; ro_umount "$TMP/mnt/app"
snap "$O/$CACHE_B0/diff" >"$T/images/sample_base_1.view.tsv"
for n in s-web s-batch s-fresh; do
  v=${n//-/_}; eval "mid=\$MID_$v"
  ( cd "$O/$mid-init/diff" && find . -mindepth 1 | sed 's#^\.##' ) >"$TMP/$n.init-paths"
  "$PY" "$EXPECTED" "$T/images/sample_app_1.view.tsv" "$T/$n.merged.tsv" "$TMP/$n.init-paths" >"$T/$n.expected.tsv"
done
for l in B0 L1 L2; do
  eval "d=\$DIFF_$l"
  "$PY" "$SNAP" layertar <"$TMP/tars/$l.tar" >"$T/layers/${d#sha256:}.tsv"
done
cp "$TMP/tars/images.tsv" "$T/images.tsv"
{
  printf '#name\tcontainer_id\tstate\tmount_id\texit_code\timage\timage_id\tinit_id\tparent_chain_id\tupperdir\n'
  for n in s-batch s-fresh s-web; do
    v=${n//-/_}; eval "cid=\$CID_$v mid=\$MID_$v"
    case $n in s-web) st=running ec=0 ;; s-batch) st=exited ec=2 ;; *) st=created ec=0 ;; esac
    printf '%s\t%s\t%s\t%s\t%s\tsample/app:1\t%s\t%s-init\t%s\t/var/lib/docker/overlay2/%s/diff\n' \
      "$n" "$cid" "$st" "$mid" "$ec" "$IMG_APP" "$mid" "$TOP_CHAIN" "$mid"
  done
} >"$T/containers.tsv"

# --------------------------------------------------------------------------------------------
# seize: tar the data root while s-web is mounted (--one-file-system keeps its merged/ as an
# empty mount-point entry, exactly as for a running container)
# --------------------------------------------------------------------------------------------
log "tar"
tar --format=posix --xattrs --xattrs-include='*' --numeric-owner -p --sparse --one-file-system \
    --sort=name -czf "$TMP/docker-sample.tar.gz" -C "$TMP" var/lib/docker

# consistency check: the final state read through a read-only mount must equal the live view
ovl_umount "$MID_s_web"
ro_mount "$TMP/mnt/s-web" "$O/$MID_s_web/diff" "$O/$MID_s_web-init/diff" $L_IMG
snap "$TMP/mnt/s-web" >"$TMP/s-web.ro.tsv"; ro_umount "$TMP/mnt/s-web"
if ! cmp -s "$TMP/s-web.ro.tsv" "$T/s-web.merged.tsv"; then
  log "WARNING: s-web live view and read-only re-mount differ:"; diff "$T/s-web.merged.tsv" "$TMP/s-web.ro.tsv" >&2 || true
fi

# --------------------------------------------------------------------------------------------
# verify the tarball, then publish
# --------------------------------------------------------------------------------------------
log "verify"
LIST=$TMP/list.txt
tar tzvf "$TMP/docker-sample.tar.gz" >"$LIST"
size=$(stat -c %s "$TMP/docker-sample.tar.gz")
[ "$size" -lt 1048576 ] || die "tarball is $size bytes (>= 1 MiB)"
grep -q "^c--------- 0/0 *0,0 .*overlay2/$MID_s_web/diff/srv/data/ctr-delete.txt$" "$LIST" || die "whiteout ctr-delete.txt missing"
grep -q "^c--------- 0/0 *0,0 .*overlay2/$CACHE_L1/diff/srv/data/img-delete-dir$" "$LIST" || die "image whiteout missing"
grep -q "overlay2/$MID_s_web/diff/srv/web/.wh.evil$" "$LIST" || die ".wh.evil missing"
XL=$TMP/x; mkdir "$XL"
tar --xattrs --xattrs-include='*' --numeric-owner -xpzf "$TMP/docker-sample.tar.gz" -C "$XL"
XD=$XL/var/lib/docker/overlay2
"$PY" - "$XD" "$MID_s_web" "$CACHE_L1" "$MID_s_batch" <<'PYEOF'
import os, sys
xd, web, l1, batch = sys.argv[1:]
def op(p): return os.getxattr(os.path.join(xd, p), 'trusted.overlay.opaque', follow_symlinks=False)
assert op(web + '/diff/srv/data/ctr-opaque') == b'y'
assert op(l1 + '/diff/srv/data/img-opaque') == b'y'
assert op(batch + '/diff/opt/app/plugins') == b'y'
w = os.path.join(xd, web, 'diff/srv/web').encode()
names = set(os.listdir(w))
for n in (b'bad\xff.txt', b'new\nline.txt', b'tab\there.txt', b'back\\slash.txt', b'.wh.evil'):
    assert n in names, n
for dp, dns, fns in os.walk(os.path.join(xd, l1, 'diff')):
    for n in dns + fns + ['.']:
        for x in os.listxattr(os.path.join(dp, n), follow_symlinks=False):
            assert x == 'trusted.overlay.opaque', (dp, n, x)
assert 'trusted.overlay.uuid' in os.listxattr(os.path.join(xd, web, 'diff'))
print('[make-sample] tarball checks passed: opaque xattrs, odd names, clean image layers, kernel xattrs in RW layers', file=sys.stderr)
PYEOF

rm -rf "$HERE/truth"
mv "$OUT/truth" "$HERE/truth"
mv "$OUT/mountinfo.txt" "$HERE/mountinfo.txt"
mv "$TMP/docker-sample.tar.gz" "$OUTTAR"
log "wrote $OUTTAR ($size bytes), $HERE/truth/, $HERE/mountinfo.txt"
log "images: sample/base:1 $IMG_BASE  sample/app:1 $IMG_APP"
log "containers: s-web $CID_s_web (running)  s-batch $CID_s_batch (exited 2)  s-fresh $CID_s_fresh (created)"
