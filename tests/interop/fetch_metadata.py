#!/usr/bin/env python3
"""Minimal BEP 3 / BEP 10 / BEP 9 client: fetch a torrent's info dict from a peer.

    python3 tests/interop/fetch_metadata.py --peer 127.0.0.1:PORT --infohash HEX40
            [--out info.bencode] [--timeout 10] [--verbose]

Connects over TCP, sends the BitTorrent handshake with reserved[5] |= 0x10
(extension protocol), the BEP 10 extension handshake advertising ut_metadata,
requests every 16 KiB metadata piece with ut_metadata, assembles the info
dict and checks that SHA-1(info) == infohash.

Prints one JSON line: {"ok": true, "infohash": ..., "info_len": n,
"metadata_pieces": n, "name": ..., "num_files": n, "total_size": n,
"files": [...], "peer_client": "...", "peer_ext": {...}} and exits 0; on
failure prints {"ok": false, "error": ...} and exits 1.

Standard library only (works with any python3); useful for debugging the
crawler's metadata fetcher against lt_seed.py.
"""

import argparse
import hashlib
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bencode_mini import bdecode, bdecode_prefix, bencode  # noqa: E402

PSTR = b"BitTorrent protocol"
PIECE = 16384
OUR_UT_METADATA = 3  # the id we ask the peer to use when sending to us


class Peer:
    def __init__(self, sock, verbose=False):
        self.sock = sock
        self.buf = b""
        self.verbose = verbose

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("peer closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_msg(self, msg_id, payload=b""):
        self.sock.sendall(struct.pack(">IB", 1 + len(payload), msg_id) + payload)

    def send_ext(self, ext_id, payload):
        self.send_msg(20, bytes([ext_id]) + payload)

    def read_msg(self):
        (n,) = struct.unpack(">I", self.recv_exact(4))
        if n == 0:
            return None, b""  # keep-alive
        body = self.recv_exact(n)
        return body[0], body[1:]


def fetch(host, port, infohash, timeout=10.0, verbose=False):
    def log(*a):
        if verbose:
            print(*a, file=sys.stderr)

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((host, port))
    deadline = time.time() + timeout
    peer = Peer(sock, verbose)

    reserved = bytearray(8)
    reserved[5] |= 0x10  # BEP 10 extension protocol
    peer_id = b"-DH0001-" + os.urandom(12)
    sock.sendall(bytes([len(PSTR)]) + PSTR + bytes(reserved) + infohash + peer_id)

    hs = peer.recv_exact(68)
    if hs[0] != 19 or hs[1:20] != PSTR:
        raise ValueError("bad handshake %r" % hs[:20])
    their_reserved = hs[20:28]
    if hs[28:48] != infohash:
        raise ValueError("peer answered for another infohash %s" % hs[28:48].hex())
    if not their_reserved[5] & 0x10:
        raise ValueError("peer does not support the extension protocol (reserved=%s)" % their_reserved.hex())
    log("handshake ok, reserved=%s peer_id=%r" % (their_reserved.hex(), hs[48:68]))

    peer.send_ext(0, bencode({"m": {"ut_metadata": OUR_UT_METADATA}, "v": "dht-hunter fetch_metadata.py",
                              "reqq": 250}))

    their_ext = None
    metadata_size = None
    their_ut = None
    pieces = {}
    requested = False
    while time.time() < deadline:
        sock.settimeout(max(0.1, deadline - time.time()))
        mid, payload = peer.read_msg()
        if mid is None:
            continue
        if mid != 20:
            log("msg id %d (%d bytes) ignored" % (mid, len(payload)))
            continue
        ext_id, body = payload[0], payload[1:]
        if ext_id == 0:
            their_ext = bdecode(body)
            m = their_ext.get("m", {})
            their_ut = m.get("ut_metadata")
            metadata_size = their_ext.get("metadata_size")
            log("extension handshake: %r" % {k: v for k, v in their_ext.items() if k != "yourip"})
            if not their_ut:
                raise ValueError("peer has no ut_metadata")
            if not metadata_size:
                raise ValueError("peer sent no metadata_size")
            n = (metadata_size + PIECE - 1) // PIECE
            for i in range(n):
                peer.send_ext(their_ut, bencode({"msg_type": 0, "piece": i}))
            requested = True
        elif ext_id == OUR_UT_METADATA and requested:
            d, end = bdecode_prefix(body)
            t = d.get("msg_type")
            if t == 1:
                pieces[d["piece"]] = body[end:]
                log("got metadata piece %d (%d bytes, total_size %s)" % (d["piece"], len(body) - end,
                                                                        d.get("total_size")))
            elif t == 2:
                raise ValueError("peer rejected metadata piece %r" % d.get("piece"))
            n = (metadata_size + PIECE - 1) // PIECE
            if len(pieces) == n:
                break
        else:
            log("extended msg %d ignored" % ext_id)
    else:
        raise TimeoutError("timed out; got %d pieces" % len(pieces))
    sock.close()

    n = (metadata_size + PIECE - 1) // PIECE
    info = b"".join(pieces[i] for i in range(n))
    if len(info) != metadata_size:
        raise ValueError("assembled %d bytes, metadata_size %d" % (len(info), metadata_size))
    if hashlib.sha1(info).digest() != infohash:
        raise ValueError("SHA-1 mismatch: %s" % hashlib.sha1(info).hexdigest())
    return info, their_ext, n


def describe(info_raw):
    info = bdecode(info_raw)
    name = info.get("name.utf-8", info.get("name", b"")).decode("utf-8", "replace")
    files = []
    if "files" in info:
        for f in info["files"]:
            if f.get("attr", b"").find(b"p") >= 0:
                continue
            path = f.get("path.utf-8", f.get("path"))
            files.append({"path": "/".join(p.decode("utf-8", "replace") for p in path), "size": f["length"]})
    else:
        files.append({"path": name, "size": info["length"]})
    return name, files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True, help="HOST:PORT ([v6]:PORT for IPv6)")
    ap.add_argument("--infohash", required=True)
    ap.add_argument("--out")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    host, _, port = args.peer.rpartition(":")
    host = host.strip("[]")
    ih = bytes.fromhex(args.infohash)
    try:
        info, ext, n = fetch(host, int(port), ih, args.timeout, args.verbose)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"ok": False, "infohash": args.infohash, "error": "%s: %s" % (type(e).__name__, e)}))
        return 1
    if args.out:
        with open(args.out, "wb") as f:
            f.write(info)
    name, files = describe(info)
    print(json.dumps({
        "ok": True, "infohash": args.infohash, "info_len": len(info), "metadata_pieces": n,
        "name": name, "num_files": len(files), "total_size": sum(f["size"] for f in files),
        "files": files,
        "peer_client": ext.get("v", b"").decode("utf-8", "replace") if isinstance(ext.get("v"), bytes) else None,
        "peer_ext": {k: (v if isinstance(v, int) else None) for k, v in ext.get("m", {}).items()},
    }, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
