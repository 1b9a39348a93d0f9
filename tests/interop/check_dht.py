#!/usr/bin/python3
"""Self-test for lt_dht.py against a tiny Python DHT node on loopback.

    unshare -n sh -c 'ip link set lo up && /usr/bin/python3 tests/interop/check_dht.py'

The Python node (MiniDht below: ping, find_node, get_peers with tokens and
values, announce_peer with token check, sample_infohashes) listens on
127.0.0.1:--port; lt_dht.py is started with --bootstrap pointing at it.
Checks that every libtorrent session queried us, announced every infohash
with a valid token, sent sample_infohashes, and that lt_dht.py reported our
samples and the peers we returned.  Prints "N passed, M failed".

MiniDht is also a reference for what a minimal responder must do for
libtorrent to proceed to announce_peer.
"""

import argparse
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bencode_mini import bdecode, bencode  # noqa: E402


class MiniDht:
    def __init__(self, host, port, preset_infohashes=()):
        self.nid = hashlib.sha1(b"dht-hunter check_dht").digest()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.secret = os.urandom(8)
        self.nodes = {}  # addr -> id
        self.peers = {ih: set() for ih in preset_infohashes}  # ih -> {(ip, port)}
        self.log = []  # (addr, method, args)
        self.announces = []  # (addr, ih, port_stored, implied_port, token_ok)
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def token(self, ip):
        return hashlib.sha1(self.secret + ip.encode()).digest()[:4]

    def compact_nodes(self):
        out = b""
        for (ip, port), nid in list(self.nodes.items())[:8]:
            out += nid + socket.inet_aton(ip) + struct.pack(">H", port)
        return out

    def run(self):
        while not self.stop:
            try:
                raw, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                msg = bdecode(raw)
            except Exception:
                continue
            if msg.get("y") != b"q":
                continue
            q = msg.get("q", b"").decode("latin-1")
            a = msg.get("a") or {}
            self.log.append((addr, q, a))
            if isinstance(a.get("id"), bytes) and len(a["id"]) == 20:
                self.nodes[addr] = a["id"]
            r = {"id": self.nid}
            err = None
            if q in ("find_node", "get_peers", "sample_infohashes", "get"):
                r["nodes"] = self.compact_nodes()
            if q == "get_peers":
                r["token"] = self.token(addr[0])
                vals = self.peers.get(a.get("info_hash"), set())
                if vals:
                    r["values"] = [socket.inet_aton(ip) + struct.pack(">H", p) for ip, p in sorted(vals)]
            elif q == "announce_peer":
                ok = a.get("token") == self.token(addr[0])
                implied = a.get("implied_port", 0) == 1
                port = addr[1] if implied else a.get("port")
                self.announces.append((addr, a.get("info_hash"), port, implied, ok, a.get("port")))
                if ok:
                    self.peers.setdefault(a["info_hash"], set()).add((addr[0], a.get("port")))
                else:
                    err = [203, "invalid token"]
            elif q == "sample_infohashes":
                ihs = list(self.peers)[:20]
                r["interval"] = 0
                r["num"] = len(self.peers)
                r["samples"] = b"".join(ihs)
            elif q not in ("ping", "find_node", "get"):
                err = [204, "method unknown"]
            reply = {"t": msg.get("t", b""), "y": "e", "e": err} if err else {"t": msg.get("t", b""), "y": "r",
                                                                                 "r": r}
            self.sock.sendto(bencode(reply), addr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=16900)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--base-port", type=int, default=17600)
    ap.add_argument("--seconds", type=float, default=12)
    args = ap.parse_args()

    ann = [hashlib.sha1(b"announce-%d" % i).digest() for i in range(2)]
    preset = [hashlib.sha1(b"preset-%d" % i).digest() for i in range(3)]
    dht = MiniDht("127.0.0.1", args.port, preset)
    cmd = [sys.executable, os.path.join(HERE, "lt_dht.py"), "--bootstrap", "127.0.0.1:%d" % args.port,
           "--sessions", str(args.sessions), "--base-port", str(args.base_port),
           "--announce", ",".join(h.hex() for h in ann), "--seconds", str(args.seconds), "--interval", "2"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 30)
    elapsed = time.time() - t0
    dht.stop = True
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            print("non-JSON line: %r" % line)
    kinds = {}
    for e in events:
        kinds[e["event"]] = kinds.get(e["event"], 0) + 1
    print("lt_dht.py rc=%d after %.1fs; events: %s" % (proc.returncode, elapsed, json.dumps(kinds, sort_keys=True)))
    if proc.stderr.strip():
        print("stderr: " + proc.stderr.strip()[-2000:])
    ports = [args.base_port + i for i in range(args.sessions)]
    by_port = {}
    for addr, q, a in dht.log:
        by_port.setdefault(addr[1], {}).setdefault(q, 0)
        by_port[addr[1]][q] += 1
    print("queries our node received, by source port: %s" % json.dumps(by_port, sort_keys=True))

    results = []

    def check(name, cond, detail=""):
        results.append(cond)
        print("%s %s%s" % ("ok  " if cond else "FAIL", name, (" -- " + detail) if detail and not cond else ""))

    check("lt_dht.py exited 0 by itself", proc.returncode == 0 and elapsed < args.seconds + 15,
          "rc=%d" % proc.returncode)
    check("summary event printed", kinds.get("summary") == 1)
    for p in ports:
        check("session on port %d queried our node" % p, sum(by_port.get(p, {}).values()) > 0)
        check("session on port %d sent sample_infohashes" % p, by_port.get(p, {}).get("sample_infohashes", 0) > 0)
        for ih in ann:
            ok = [x for x in dht.announces if x[0][1] == p and x[1] == ih and x[4]]
            check("session %d announced %s with a valid token" % (p, ih.hex()[:8]), bool(ok),
                  "announces: %r" % [(x[0], x[1].hex()[:8] if x[1] else None, x[4]) for x in dht.announces])
            if ok:
                check("  ... port=%d implied_port=1" % p, ok[0][5] == p and ok[0][3], repr(ok[0]))
    samples = [e for e in events if e["event"] == "dht_sample_infohashes"]
    got = set(h for e in samples for h in e["samples"])
    check("dht_sample_infohashes events carry our preset samples",
          all(h.hex() in got for h in preset), "samples seen: %r" % sorted(got)[:5])
    replies = [e for e in events if e["event"] == "dht_get_peers_reply"]
    peers = set(p for e in replies for p in e["peers"])
    check("dht_get_peers_reply events list the announced sessions",
          all("127.0.0.1:%d" % p in peers for p in ports), "peers seen: %r" % sorted(peers))
    pk = [e for e in events if e["event"] == "dht_pkt"]
    check("dht_pkt events in both directions", any(e["dir"] == "in" for e in pk) and any(e["dir"] == "out" for e in pk))
    errs = [e for e in events if e["event"] == "error"]
    if errs:
        print("error events: %r" % errs[:5])
    print("%d passed, %d failed" % (sum(results), len(results) - sum(results)))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
