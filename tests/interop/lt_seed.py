#!/usr/bin/python3
"""Create test torrents with libtorrent and seed them on 127.0.0.1 (TCP only).

    /usr/bin/python3 tests/interop/lt_seed.py --dir DIR --port P [--count N]
            [--spec spec.json] [--seconds S] [--format v1|hybrid] [--events]

For each torrent it prints one JSON line to stdout

    {"infohash": hex40, "name": ..., "total_size": n, "num_files": n,
     "info_len": n, "metadata_pieces": n, "files": [{"path": "a/b", "size": n}],
     "port": P, "torrent_file": path, "kind": ...}

then a line "READY", then keeps seeding until its stdin reaches EOF (or, with
--seconds S, for S seconds regardless of stdin), then prints "EXIT" and exits 0.
With --events it also prints one JSON line per peer connection / disconnection
after READY ({"event": "peer_connected", ...}).

Default torrents (--count N takes the first N; N > 3 adds small single-file
torrents):
  1. "single":  one 100 000-byte file; info dict << 16 KiB (1 metadata piece)
  2. "multi":   500 files with long paths in nested dirs; info dict ~60 KiB
                (4 metadata pieces of 16 KiB)
  3. "unicode": multi-file torrent whose torrent name, directories and file
                names are Japanese / Greek / Cyrillic / Chinese / emoji /
                accented
--spec FILE replaces the defaults with a JSON list of
  {"name": str, "files": [{"path": "a/b", "size": n}, ...], "single": bool,
   "piece_length": n}
("single": true means a single-file torrent named `name`; files are relative
to the torrent's directory).

File contents are pseudo-random but deterministic (seeded by path), and no
creation date is stored, so the same spec always yields the same infohashes.

Network: DHT, LSD, UPnP and NAT-PMP are off; it listens on 127.0.0.1:P only
(TCP and uTP, as libtorrent's defaults; --transport utp refuses TCP) and
never connects out. Works inside or outside a network namespace.
"""

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time

import libtorrent as lt

METADATA_PIECE = 16384


def default_specs(count):
    specs = [
        {"kind": "single", "name": "dht-hunter-single.bin", "single": True,
         "files": [{"path": "dht-hunter-single.bin", "size": 100000}], "piece_length": 16384},
    ]
    multi = []
    for i in range(500):
        multi.append({
            "path": "section_%02d/subdirectory_with_a_rather_long_descriptive_name_%03d/"
                    "file_number_%04d_with_a_long_descriptive_name.dat" % (i % 10, i % 50, i),
            "size": 1 + (i * 37) % 3000,
        })
    multi.append({"path": "empty-file.txt", "size": 0})
    specs.append({"kind": "multi", "name": "dht-hunter-multi", "files": multi, "piece_length": 16384})
    specs.append({"kind": "unicode", "name": "日本語トレント 🎉 café", "piece_length": 16384, "files": [
        {"path": "データ/ファイル①.txt", "size": 5000},
        {"path": "émoji 😀/naïve résumé.txt", "size": 3000},
        {"path": "Ünïcödé/Ελληνικά/файл.bin", "size": 20000},
        {"path": "中文/文件.dat", "size": 1234},
        {"path": "README", "size": 100},
    ]})
    i = 0
    while len(specs) < count:
        name = "dht-hunter-extra-%d.bin" % i
        specs.append({"kind": "extra", "name": name, "single": True,
                      "files": [{"path": name, "size": 1000 + 777 * i}], "piece_length": 16384})
        i += 1
    return specs[:count]


def content(path, size):
    rnd = random.Random(hashlib.sha1(path.encode()).digest())
    return rnd.randbytes(size)


def make_torrent(spec, root, fmt):
    name = spec["name"]
    single = spec.get("single", False)
    fs = lt.file_storage()
    for f in spec["files"]:
        rel = f["path"] if single else name + "/" + f["path"]
        if single:
            rel = name
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        data = content(rel, f["size"])
        if not os.path.exists(full) or os.path.getsize(full) != len(data):
            with open(full, "wb") as fh:
                fh.write(data)
        fs.add_file(rel, f["size"])
    flags = lt.create_torrent.v1_only if fmt == "v1" else 0
    ct = lt.create_torrent(fs, spec.get("piece_length", 16384), flags=flags)
    ct.set_creator("dht-hunter lt_seed.py")
    lt.set_piece_hashes(ct, root)
    e = ct.generate()
    info = e[b"info"] if b"info" in e else e["info"]
    info_raw = lt.bencode(info)
    torrent_raw = lt.bencode(e)
    ti = lt.torrent_info(torrent_raw)
    ih = hashlib.sha1(info_raw).hexdigest()
    assert ih == str(ti.info_hashes().v1), (ih, str(ti.info_hashes().v1))
    tdir = os.path.join(root, "torrents")
    os.makedirs(tdir, exist_ok=True)
    tpath = os.path.join(tdir, ih + ".torrent")
    with open(tpath, "wb") as fh:
        fh.write(torrent_raw)
    files = []
    st = ti.files()
    pad = 0
    for i in range(st.num_files()):
        if st.file_flags(i) & lt.file_storage.flag_pad_file:
            pad += 1
            continue
        p = st.file_path(i).replace(os.sep, "/")
        if not single and p.startswith(name + "/"):
            p = p[len(name) + 1:]
        files.append({"path": p, "size": st.file_size(i)})
    desc = {
        "infohash": ih,
        "name": name,
        "kind": spec.get("kind", "spec"),
        "total_size": sum(f["size"] for f in files),
        "num_files": len(files),
        "info_len": len(info_raw),
        "metadata_pieces": (len(info_raw) + METADATA_PIECE - 1) // METADATA_PIECE,
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "files": files,
        "torrent_file": tpath,
    }
    if fmt != "v1":
        desc["infohash_v2"] = str(ti.info_hashes().v2)
        desc["pad_files"] = pad
    return ti, desc


def settings(host, port, encryption="default", transport="default"):
    wanted = {
        "listen_interfaces": "%s:%d" % (host, port),
        "outgoing_interfaces": "",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_outgoing_tcp": False,  # a seed never needs to connect out
        "announce_to_all_trackers": False,
        "alert_mask": int(lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
                          | lt.alert.category_t.connect_notification | lt.alert.category_t.peer_notification),
        "user_agent": "dht-hunter-lt-seed",
    }
    if encryption == "forced":
        # MSE/PE only, RC4 only: pe_forced (0) both ways, allowed_enc_level
        # pe_rc4 (2); a plaintext handshake is refused.
        wanted.update({"in_enc_policy": 0, "out_enc_policy": 0, "allowed_enc_level": 2, "prefer_rc4": True})
    if transport == "utp":
        # uTP only: incoming TCP connections are refused (libtorrent still
        # opens the TCP listen socket and closes what it accepts).
        wanted.update({"enable_incoming_tcp": False, "enable_incoming_utp": True})
    known = lt.default_settings()
    return {k: v for k, v in wanted.items() if k in known}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--spec")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--format", choices=["v1", "hybrid"], default="v1")
    ap.add_argument("--events", action="store_true")
    ap.add_argument("--encryption", choices=["default", "forced"], default="default",
                    help="forced: MSE/PE with RC4 only (in/out_enc_policy forced, allowed_enc_level rc4)")
    ap.add_argument("--transport", choices=["default", "utp"], default="default",
                    help="default: libtorrent's, incoming TCP and uTP; utp: incoming uTP only "
                         "(enable_incoming_tcp off)")
    args = ap.parse_args()

    root = os.path.abspath(args.dir)
    os.makedirs(root, exist_ok=True)
    if args.spec:
        with open(args.spec, encoding="utf-8") as f:
            specs = json.load(f)
    else:
        specs = default_specs(args.count)

    ses = lt.session(settings(args.host, args.port, args.encryption, args.transport))
    # wait for the TCP listen socket
    listening = False
    deadline = time.time() + 10
    while time.time() < deadline and not listening:
        for a in ses.pop_alerts():
            wanted_sock = "[uTP]" if args.transport == "utp" else "[TCP]"
            if isinstance(a, lt.listen_succeeded_alert) and wanted_sock in a.message():
                listening = True
            elif isinstance(a, lt.listen_failed_alert):
                print("listen failed: %s" % a.message(), file=sys.stderr)
                return 2
        time.sleep(0.05)
    if not listening:
        print("no listen_succeeded_alert for %s:%d" % (args.host, args.port), file=sys.stderr)
        return 2

    handles = []
    out = []
    for spec in specs:
        ti, desc = make_torrent(spec, root, args.format)
        desc["port"] = args.port
        p = lt.add_torrent_params()
        p.ti = ti
        p.save_path = root
        p.flags = (p.flags | lt.torrent_flags.seed_mode) & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
        handles.append(ses.add_torrent(p))
        out.append(desc)

    deadline = time.time() + 30
    while time.time() < deadline:
        if all(h.status().is_seeding for h in handles):
            break
        ses.pop_alerts()
        time.sleep(0.05)
    else:
        print("torrents did not reach seeding state", file=sys.stderr)
        return 3

    for d in out:
        print(json.dumps(d, ensure_ascii=False), flush=True)
    print("READY", flush=True)

    stop = threading.Event()
    if args.seconds is None:
        def wait_stdin():
            try:
                while sys.stdin.buffer.read(65536):
                    pass
            except Exception:
                pass
            stop.set()
        threading.Thread(target=wait_stdin, daemon=True).start()
        end = float("inf")
    else:
        end = time.time() + args.seconds

    while not stop.is_set() and time.time() < end:
        for a in ses.pop_alerts():
            if not args.events:
                continue
            ev = None
            if isinstance(a, lt.peer_connect_alert) or type(a).__name__ == "incoming_connection_alert":
                ev = "peer_connected"
            elif isinstance(a, lt.peer_disconnected_alert):
                ev = "peer_disconnected"
            if ev:
                d = {"event": ev, "message": a.message()}
                try:
                    d["infohash"] = str(a.handle.info_hashes().v1)
                except Exception:
                    pass
                try:
                    d["ip"] = "%s:%d" % tuple(a.ip) if hasattr(a, "ip") else None
                except Exception:
                    pass
                print(json.dumps(d, ensure_ascii=False), flush=True)
        stop.wait(0.1)

    for h in handles:
        ses.remove_torrent(h)
    del ses
    print("EXIT", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
