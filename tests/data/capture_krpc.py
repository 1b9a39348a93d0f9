#!/usr/bin/python3
"""Capture golden KRPC (BEP 5 / 33 / 42 / 44 / 51) packets from a real libtorrent.

Run it ONLY inside a private network namespace so that nothing can leak:

    unshare -n sh -c 'ip link set lo up && /usr/bin/python3 tests/data/capture_krpc.py'

It starts one libtorrent session with the DHT bound to 127.0.0.1 (and ::1) and
plays the counterpart DHT "node" with plain Python UDP sockets:

 (a) it makes libtorrent send us queries (ping, get_peers, announce_peer,
     sample_infohashes, get, put; libtorrent 2.0 never sends find_node) and
     saves the raw datagrams as lt_query_<name>.bin;
 (b) it sends libtorrent well-formed (and a few malformed) queries and saves the
     raw replies as lt_response_<name>.bin / lt_error_<name>.bin, plus the exact
     query we sent as our_query_<name>.bin.

Then it writes MANIFEST.md (human readable) and manifest.json (machine readable)
into the output directory (default: tests/data/krpc next to this script).

Options:  --out DIR     output directory
          --port N      libtorrent DHT port (default 17000)
          --keys-only   print a key-set summary to stdout (used to compare runs)

Python 3 standard library + Debian's python3-libtorrent only.
"""

import argparse
import datetime
import hashlib
import ipaddress
import json
import os
import queue
import shutil
import socket
import struct
import sys
import threading
import time

import libtorrent as lt

# The bencode codec the interop scripts share (tests/interop/bencode_mini.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
from bencode_mini import BdecodeError, bdecode, bencode  # noqa: E402,F401


def compact_peer(ip, port):
    return ipaddress.ip_address(ip).packed + struct.pack(">H", port)


def compact_node(nid, ip, port):
    return nid + compact_peer(ip, port)


def parse_nodes(blob, alen):
    step = 20 + alen + 2
    out = []
    for i in range(0, len(blob) - len(blob) % step, step):
        nid = blob[i:i + 20]
        ip = str(ipaddress.ip_address(blob[i + 20:i + 20 + alen]))
        port = struct.unpack(">H", blob[i + 20 + alen:i + step])[0]
        out.append((nid.hex(), ip, port))
    return out


def parse_peer(b):
    if len(b) == 6:
        return "%s:%d" % (ipaddress.ip_address(b[:4]), struct.unpack(">H", b[4:])[0])
    if len(b) == 18:
        return "[%s]:%d" % (ipaddress.ip_address(b[:16]), struct.unpack(">H", b[16:])[0])
    return b.hex()


# --------------------------------------------------------------------------
# our fake DHT node(s)
# --------------------------------------------------------------------------


class FakeNode:
    """A UDP socket that auto-answers libtorrent's queries and records them."""

    instances = []

    def __init__(self, name, host, port, nid, family=socket.AF_INET):
        FakeNode.instances.append(self)
        self.name = name
        self.host = host
        self.port = port
        self.nid = nid
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.received_queries = []  # (raw, decoded, addr)
        self.responses = queue.Queue()  # (raw, decoded, addr) non-query packets
        self.token = b"tk" + os.urandom(4)
        self.extra_nodes = b""  # compact nodes to hand out (IPv4)
        self.extra_nodes6 = b""
        self.values = []  # compact peers for get_peers
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
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
            if not isinstance(msg, dict):
                continue
            if msg.get("y") == b"q":
                self.received_queries.append((raw, msg, addr))
                self._answer(msg, addr)
            else:
                self.responses.put((raw, msg, addr))

    def _answer(self, msg, addr):
        q = msg.get("q", b"")
        a = msg.get("a", {}) or {}
        r = {"id": self.nid}
        if q in (b"find_node", b"get_peers", b"get", b"sample_infohashes"):
            if self.extra_nodes:
                r["nodes"] = self.extra_nodes
            if self.extra_nodes6 and b"n6" in (a.get("want") or []):
                r["nodes6"] = self.extra_nodes6
        if q in (b"get_peers", b"get"):
            r["token"] = self.token
        if q == b"get_peers" and self.values:
            r["values"] = list(self.values)
        if q == b"sample_infohashes":
            r["interval"] = 60
            r["num"] = 2
            r["samples"] = hashlib.sha1(b"s1").digest() + hashlib.sha1(b"s2").digest()
        if q == b"get" and a.get("target") == getattr(self, "item_target", None):
            r["v"] = self.item_value
        resp = {"t": msg.get("t", b""), "y": "r", "r": r}
        self.sock.sendto(bencode(resp), addr)

    def query(self, raw, dest, tid, timeout=3.0):
        """Send raw bytes to dest, wait for the packet whose t == tid."""
        self.sock.sendto(raw, dest)
        deadline = time.time() + timeout
        pending = []
        got = None
        while time.time() < deadline:
            try:
                pkt = self.responses.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if pkt[1].get("t") == tid:
                got = pkt
                break
            pending.append(pkt)
        for p in pending:
            self.responses.put(p)
        return got

    def close(self):
        self.stop = True
        self.thread.join(1)
        self.sock.close()


# --------------------------------------------------------------------------
# libtorrent session
# --------------------------------------------------------------------------


def loopback_settings(listen, extra=None):
    """Settings that keep libtorrent on loopback and make loopback DHT work."""
    wanted = {
        "enable_dht": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "listen_interfaces": listen,
        "outgoing_interfaces": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        "dht_extended_routing_table": False,  # 8-node buckets: easier to fill (see ping)
        "allow_multiple_connections_per_ip": True,
        "dht_upload_rate_limit": 10 * 1024 * 1024,
        "dht_block_ratelimit": 10000,
        "dht_max_fail_count": 100,
        "announce_ip": "",
        "alert_mask": int(lt.alert.category_t.all_categories),
        "alert_queue_size": 100000,
    }
    if extra:
        wanted.update(extra)
    known = lt.default_settings()
    return {k: v for k, v in wanted.items() if k in known}


class Capture:
    def __init__(self, out, port):
        self.out = out
        self.port = port
        self.files = []  # manifest entries
        self.pkts = {}
        self.notes = []
        self.log_lines = []

    def save(self, fname, raw, direction, answers=None, note=""):
        path = os.path.join(self.out, fname)
        with open(path, "wb") as f:
            f.write(raw)
        self.pkts[fname] = (raw, direction, answers, note)
        print("  saved %-45s %4d bytes" % (fname, len(raw)), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "krpc"))
    ap.add_argument("--port", type=int, default=17000)
    ap.add_argument("--keys-only", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.endswith(".bin") or f in ("MANIFEST.md", "manifest.json"):
            os.remove(os.path.join(args.out, f))

    # Refuse to run with a real network: nothing here may leave loopback.
    check_namespace()

    P = args.port
    cap = Capture(args.out, P)
    LT4 = ("127.0.0.1", P)
    LT6 = ("::1", P)

    cur = {}  # the libtorrent session currently in use, and its alerts

    def pump():
        for a in cur["ses"].pop_alerts():
            cur["alerts"].append(a)

    def start_session(listen, n_dht):
        """Start a session; return {"v4": id, "v6": id} of its DHT nodes."""
        cur["ses"] = lt.session(loopback_settings(listen))
        cur["alerts"] = []
        deadline = time.time() + 10
        while time.time() < deadline:
            pump()
            if sum("DHT tracker with node id" in a.message() for a in cur["alerts"]) >= n_dht:
                break
            time.sleep(0.1)
        ids = {}
        for a in cur["alerts"]:
            m = a.message()
            if "DHT tracker with node id" in m:
                fam = "v6" if "starting ::1 " in m or "starting [::1]" in m else "v4"
                ids[fam] = bytes.fromhex(m.split("node id: ")[1].strip())
        return cur["ses"], ids

    # Session A (phase b): dual stack, so that want=n6 / nodes6 can be tested.
    ses, ids_a = start_session("127.0.0.1:%d,[::1]:%d" % (P, P), 2)
    lt_ids = ["A/%s %s" % (k, v.hex()) for k, v in sorted(ids_a.items())]

    # ---------------- our nodes ----------------
    def nid_for(tag):
        return hashlib.sha1(b"dht-hunter-golden:" + tag.encode()).digest()

    main_node = FakeNode("main", "127.0.0.1", P + 100, nid_for("main"))
    helpers = [FakeNode("h%d" % i, "127.0.0.1", P + 101 + i, nid_for("h%d" % i))
               for i in range(6)]
    helpers6 = [FakeNode("v%d" % i, "::1", P + 201 + i, nid_for("v%d" % i), socket.AF_INET6)
                for i in range(4)]
    nodes_blob = b"".join(compact_node(h.nid, h.host, h.port) for h in helpers)
    nodes6_blob = b"".join(compact_node(h.nid, h.host, h.port) for h in helpers6)
    for n in [main_node] + helpers:
        n.extra_nodes = nodes_blob
        n.extra_nodes6 = nodes6_blob
    for n in helpers6:
        n.extra_nodes6 = nodes6_blob

    def settle(sec):
        end = time.time() + sec
        while time.time() < end:
            pump()
            time.sleep(0.05)

    # ============ (b) first: our queries -> libtorrent responses ============
    tid_counter = [0]

    def tid():
        tid_counter[0] += 1
        return b"q" + struct.pack(">B", tid_counter[0])

    def ask(name, msg, node=main_node, dest=LT4, kind=None, note=""):
        t = msg.get("t") if msg.get("t") is not None else tid()
        msg = dict(msg)
        msg["t"] = t
        raw = bencode(msg)
        got = node.query(raw, dest, t)
        if got is None:
            cap.notes.append("NO REPLY for %s" % name)
            print("  no reply for", name, file=sys.stderr)
            return None
        rraw, rmsg, _ = got
        y = rmsg.get("y")
        prefix = "lt_error_" if y == b"e" else "lt_response_"
        cap.save("our_query_%s.bin" % name, raw, "ours", note=note)
        cap.save(prefix + name + ".bin", rraw, "lt", answers="our_query_%s.bin" % name, note=note)
        time.sleep(0.15)
        pump()
        return rmsg

    me = main_node.nid
    # Warm up: every helper pings libtorrent (it only puts query senders in
    # its replacement list), then add_dht_node() each one: libtorrent sends it
    # a get_peers and our answer makes the node "confirmed", i.e. eligible to
    # be returned in nodes/nodes6.
    #
    # The "far" nodes all have the first id bit opposite to libtorrent's id,
    # so they all land in bucket 0; with 8-node buckets, 8 live + 8
    # replacements make the bucket "full", and then libtorrent's 5-second
    # refresh tick sends a plain `ping` (otherwise it sends get_peers).
    def make_far(lt_id, base, tag):
        out = []
        for i in range(20):
            nid = bytearray(nid_for("%s%d" % (tag, i)))
            nid[0] = (nid[0] & 0x7F) | ((lt_id[0] ^ 0x80) & 0x80)
            n = FakeNode("%s%d" % (tag, i), "127.0.0.1", base + i, bytes(nid))
            n.extra_nodes = nodes_blob
            out.append(n)
        return out

    far = make_far(ids_a.get("v4", b"\0" * 20), P + 300, "far")
    for h in helpers + helpers6 + [main_node]:
        dest = LT6 if h in helpers6 else LT4
        h.query(bencode({"t": b"w" + h.name.encode(), "y": "q", "q": "ping", "a": {"id": h.nid}}),
                dest, b"w" + h.name.encode())
        time.sleep(0.02)
    for h in helpers + helpers6 + far:
        ses.add_dht_node((h.host, h.port))
    settle(1.5)

    ask("ping", {"y": "q", "q": "ping", "a": {"id": me}})
    target = nid_for("find-target")
    ask("find_node", {"y": "q", "q": "find_node", "a": {"id": me, "target": target}})
    ask("find_node_n4", {"y": "q", "q": "find_node", "a": {"id": me, "target": target, "want": ["n4"]}})
    ask("find_node_n6", {"y": "q", "q": "find_node", "a": {"id": me, "target": target, "want": ["n6"]}})
    ask("find_node_n4n6", {"y": "q", "q": "find_node",
                           "a": {"id": me, "target": target, "want": ["n4", "n6"]}})
    # same over IPv6 from an IPv6 node (plain, no want)
    ask("find_node_ipv6", {"y": "q", "q": "find_node", "a": {"id": helpers6[0].nid, "target": target}},
        node=helpers6[0], dest=LT6, note="sent from [::1] to libtorrent's IPv6 DHT socket")

    ih_empty = nid_for("infohash-without-peers")
    ih_full = nid_for("infohash-with-peers")
    ask("get_peers_no_peers", {"y": "q", "q": "get_peers", "a": {"id": me, "info_hash": ih_empty}})
    r = ask("get_peers_token", {"y": "q", "q": "get_peers", "a": {"id": me, "info_hash": ih_full}},
            note="first get_peers for the infohash we then announce; gives us the token")
    token = r["r"]["token"] if r and isinstance(r.get("r"), dict) and "token" in r["r"] else b"xx"
    ask("announce_peer", {"y": "q", "q": "announce_peer",
                          "a": {"id": me, "info_hash": ih_full, "port": 6881, "token": token}})
    ask("announce_peer_implied_port", {"y": "q", "q": "announce_peer",
                                       "a": {"id": me, "info_hash": ih_full, "port": 1,
                                             "implied_port": 1, "token": token}},
        note="implied_port=1: libtorrent should store the UDP source port instead of 'port'")
    # a few helpers announce too (seed flag on one of them), so values has several peers
    for i, h in enumerate(helpers[:3]):
        t1 = b"g" + bytes([i])
        got = h.query(bencode({"t": t1, "y": "q", "q": "get_peers", "a": {"id": h.nid, "info_hash": ih_full}}),
                      LT4, t1)
        if got and "token" in got[1].get("r", {}):
            t2 = b"a" + bytes([i])
            a = {"id": h.nid, "info_hash": ih_full, "port": 7000 + i, "token": got[1]["r"]["token"]}
            if i == 0:
                a["seed"] = 1
            h.query(bencode({"t": t2, "y": "q", "q": "announce_peer", "a": a}), LT4, t2)
        time.sleep(0.1)
    ask("announce_peer_bad_token", {"y": "q", "q": "announce_peer",
                                    "a": {"id": me, "info_hash": ih_full, "port": 6881,
                                          "token": b"\x00\x01\x02\x03"}})
    ask("get_peers_values", {"y": "q", "q": "get_peers", "a": {"id": me, "info_hash": ih_full}})
    ask("get_peers_scrape", {"y": "q", "q": "get_peers", "a": {"id": me, "info_hash": ih_full, "scrape": 1}},
        note="BEP 33 scrape=1")
    ask("get_peers_noseed", {"y": "q", "q": "get_peers", "a": {"id": me, "info_hash": ih_full, "noseed": 1}},
        note="BEP 33 noseed=1")
    ask("sample_infohashes", {"y": "q", "q": "sample_infohashes", "a": {"id": me, "target": target}})
    ask("sample_infohashes_n4n6", {"y": "q", "q": "sample_infohashes",
                                   "a": {"id": me, "target": target, "want": ["n4", "n6"]}})
    ask("unknown_method_with_target", {"y": "q", "q": "vote_for_me", "a": {"id": me, "target": target}},
        note="unknown method name with a 'target' argument")
    ask("unknown_method_with_info_hash", {"y": "q", "q": "vote_for_me", "a": {"id": me, "info_hash": ih_full}},
        note="unknown method name with an 'info_hash' argument")
    ask("unknown_method", {"y": "q", "q": "vote_for_me", "a": {"id": me}},
        note="unknown method, no target/info_hash")
    ask("missing_id", {"y": "q", "q": "ping", "a": {}}, note="ping with an empty 'a' (no id)")
    ask("missing_a", {"y": "q", "q": "ping"}, note="query with no 'a' dict at all")
    ask("find_node_missing_target", {"y": "q", "q": "find_node", "a": {"id": me}},
        note="find_node without its required 'target'")
    ask("get_peers_bad_info_hash", {"y": "q", "q": "get_peers", "a": {"id": me, "info_hash": b"short"}},
        note="info_hash that is 5 bytes, not 20")
    ask("ping_read_only", {"y": "q", "q": "ping", "a": {"id": nid_for("ro")}, "ro": 1},
        note="BEP 43 ro=1 (read-only querier)")
    ask("get_immutable_missing", {"y": "q", "q": "get", "a": {"id": me, "target": nid_for("no-item")}},
        note="BEP 44 get for an item libtorrent does not have")

    settle(0.5)

    # ============ (a) queries from libtorrent ============
    # Session B: IPv4 only.  With a dual-stack session the IPv6 DHT node also
    # sends queries to IPv4 addresses (adding "want": ["n6"]) and e.g.
    # dht_sample_infohashes() is dispatched by whichever node comes first in
    # libtorrent's map, so the captures would not be reproducible.
    cur["ses"] = None
    ses = None  # drop session A
    time.sleep(0.5)
    ses, ids_b = start_session("127.0.0.1:%d" % (P + 1), 1)
    lt_ids.append("B/v4 %s" % ids_b.get("v4", b"").hex())
    want_id = {"id": ids_b.get("v4")}

    def first_query(nodes, method, since, timeout=8.0, any_id=False):
        end = time.time() + timeout
        while time.time() < end:
            for n in nodes:
                for raw, msg, addr in n.received_queries[since.get(n.name, 0):]:
                    if msg.get("q") != method.encode():
                        continue
                    if not any_id and (msg.get("a") or {}).get("id") != want_id["id"]:
                        continue
                    return raw, msg, n
            pump()
            time.sleep(0.05)
        return None

    def marks(nodes):
        return {n.name: len(n.received_queries) for n in nodes}

    all_nodes = [main_node] + helpers

    def nodes_dbg():
        return all_nodes

    def grab(name, method, trigger, timeout=8.0, note=""):
        m = marks(all_nodes)
        trigger()
        got = first_query(all_nodes, method, m, timeout)
        if got is None:
            cap.notes.append("libtorrent did NOT send %s (%s)" % (method, name))
            for n in nodes_dbg():
                print("   %s got %s" % (n.name, [x.get("q") for _r, x, _a in n.received_queries]),
                      file=sys.stderr)
            print("  libtorrent did not send", method, file=sys.stderr)
            return None
        raw, msg, n = got
        cap.save("lt_query_%s.bin" % name, raw, "lt",
                 note=(note + " " if note else "") + "received by our node %s [%s]:%d" % (n.name, n.host, n.port))
        return msg

    def already(method):
        return first_query(all_nodes, method, {}, timeout=0.01)

    far_b = make_far(ids_b.get("v4", b"\0" * 20), P + 330, "farB")
    all_nodes.extend(far_b)
    for h in [main_node] + helpers:
        h.query(bencode({"t": b"w" + h.name.encode(), "y": "q", "q": "ping", "a": {"id": h.nid}}),
                ("127.0.0.1", P + 1), b"w" + h.name.encode())
        time.sleep(0.02)
    for h in helpers + far_b:
        ses.add_dht_node((h.host, h.port))
    settle(1.5)

    # get_peers sent by add_dht_node() (libtorrent 2.0 "pings" new nodes with
    # get_peers for a random id in the bucket; see node::send_single_refresh)
    fresh = FakeNode("fresh", "127.0.0.1", P + 150, nid_for("fresh"))
    fresh.extra_nodes = nodes_blob
    all_nodes.append(fresh)
    grab("get_peers_add_node", "get_peers", lambda: ses.add_dht_node(("127.0.0.1", fresh.port)),
         note="triggered by session.add_dht_node: libtorrent 2.0 probes a new node with get_peers, not ping;")

    # ping: only sent by the refresh tick when the node's bucket is full
    got = already("ping")
    if got is None:
        got = first_query(all_nodes, "ping", marks(all_nodes), timeout=15)
    if got is None:
        cap.notes.append("libtorrent did NOT send ping")
    else:
        raw, msg, n = got
        cap.save("lt_query_ping.bin", raw, "lt",
                 note="sent by libtorrent's routing-table refresh tick (every 5 s) because bucket 0 was full "
                      "(8 live + 8 replacement nodes); received by our node %s [%s]:%d" % (n.name, n.host, n.port))

    ih_lookup = nid_for("lt-lookup-target")
    grab("get_peers", "get_peers", lambda: ses.dht_get_peers(lt.sha1_hash(ih_lookup)),
         note="triggered by session.dht_get_peers;")
    settle(2)

    # announce_peer.  The Python bindings of 2.0.8 cannot build the
    # dht_announce_flag type, so session.dht_announce() is unusable from
    # Python; adding a torrent by info-hash (DHT enabled) makes libtorrent
    # announce it itself (get_peers lookup, then announce_peer).
    tmpdir = os.path.join("/tmp", "capture_krpc_%d" % os.getpid())
    os.makedirs(tmpdir, exist_ok=True)

    def add_by_hash(ih):
        p = lt.add_torrent_params()
        p.info_hashes = lt.info_hash_t(lt.sha1_hash(ih))
        p.save_path = tmpdir
        p.name = "golden"
        ses.add_torrent(p)

    ih_ann = nid_for("lt-announce-target")
    grab("announce_peer", "announce_peer", lambda: add_by_hash(ih_ann),
         timeout=20, note="triggered by adding a torrent by info-hash (libtorrent announces it itself);")
    settle(1)

    # seed=1: a real (tiny) torrent added in seed mode
    seed_dir = os.path.join(tmpdir, "seed")
    os.makedirs(seed_dir, exist_ok=True)
    with open(os.path.join(seed_dir, "golden.txt"), "wb") as f:
        f.write(b"dht-hunter golden packet seed\n" * 100)
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(seed_dir, "golden.txt"))
    ct = lt.create_torrent(fs, 16384)
    lt.set_piece_hashes(ct, seed_dir)
    ti = lt.torrent_info(ct.generate())
    ihs = ti.info_hash().to_bytes()

    def add_seed():
        p = lt.add_torrent_params()
        p.ti = ti
        p.save_path = seed_dir
        p.flags |= lt.torrent_flags.seed_mode
        ses.add_torrent(p)
    m = marks(all_nodes)
    add_seed()
    end = time.time() + 20
    got = None
    while time.time() < end and got is None:
        for n in all_nodes:
            for raw, msg, addr in n.received_queries[m.get(n.name, 0):]:
                if msg.get("q") == b"announce_peer" and msg.get("a", {}).get("info_hash") == ihs:
                    got = (raw, n)
        settle(0.1)
    if got:
        cap.save("lt_query_announce_peer_seed.bin", got[0], "lt",
                 note="triggered by adding a complete torrent in seed_mode (seed=1); received by %s" % got[1].name)
    else:
        cap.notes.append("libtorrent did NOT send announce_peer with seed=1")

    # without uTP, libtorrent does not ask for implied_port
    ses.apply_settings({"enable_incoming_utp": False})
    grab("announce_peer_no_utp", "announce_peer", lambda: add_by_hash(nid_for("lt-announce-no-utp")),
         timeout=20, note="enable_incoming_utp=False, torrent added by info-hash (no implied_port expected);")
    ses.apply_settings({"enable_incoming_utp": True})
    settle(1)

    grab("sample_infohashes", "sample_infohashes",
         lambda: ses.dht_sample_infohashes(("127.0.0.1", main_node.port), lt.sha1_hash(nid_for("sample-target"))),
         note="triggered by session.dht_sample_infohashes(endpoint, target);")
    settle(1)

    # BEP 44 get (immutable)
    grab("get", "get", lambda: ses.dht_get_immutable_item(lt.sha1_hash(nid_for("imm-item"))),
         timeout=10, note="triggered by session.dht_get_immutable_item;")
    settle(1)
    grab("put", "put", lambda: ses.dht_put_immutable_item("hello dht-hunter"),
         timeout=15, note="triggered by session.dht_put_immutable_item('hello dht-hunter');")
    settle(1)

    # find_node: libtorrent 2.0 bootstraps, refreshes buckets and probes new
    # nodes with get_peers, and even its "privacy lookups"
    # (dht_privacy_lookups=True, obfuscated targets) use get_peers.  We try
    # the privacy lookup anyway and record whatever happens.
    got = already("find_node")
    if got is None:
        m = marks(all_nodes)
        ses.apply_settings({"dht_privacy_lookups": True})
        ses.dht_get_peers(lt.sha1_hash(nid_for("privacy-lookup")))
        got = first_query(all_nodes, "find_node", m, timeout=6)
        ses.apply_settings({"dht_privacy_lookups": False})
    if got:
        raw, msg, n = got
        cap.save("lt_query_find_node.bin", raw, "lt", note="received by %s [%s]:%d" % (n.name, n.host, n.port))
    else:
        cap.notes.append("libtorrent %s never sent find_node during the whole run, not even for a "
                         "dht_privacy_lookups=True lookup: 2.0 uses get_peers for bootstrap, refresh, "
                         "add_dht_node probes and obfuscated lookups. There is no lt_query_find_node.bin."
                         % lt.__version__)
    settle(1)

    # bootstrap: get_peers for (almost) our own id, with "bs": 1 when sent to a
    # bootstrap/router node.  Restarting the DHT gives libtorrent a new id.
    boot = FakeNode("boot", "127.0.0.1", P + 160, nid_for("boot"))
    boot.extra_nodes = nodes_blob

    def restart():
        ses.apply_settings({"dht_bootstrap_nodes": "127.0.0.1:%d" % boot.port, "enable_dht": False})
        settle(0.5)
        ses.apply_settings({"enable_dht": True})
    all_nodes.append(boot)
    m = marks([boot])
    restart()
    got = first_query([boot], "get_peers", m, timeout=10, any_id=True)
    if got:
        cap.save("lt_query_get_peers_bootstrap.bin", got[0], "lt",
                 note="sent to the dht_bootstrap_nodes entry after restarting the DHT (bootstrap lookup);")
    else:
        cap.notes.append("libtorrent did NOT send a bootstrap query to dht_bootstrap_nodes")
    settle(1)

    # every distinct query kind libtorrent sent during the whole run
    seen = {}
    want_seen = {}
    for n in FakeNode.instances:
        for raw, msg, addr in n.received_queries:
            q = msg.get("q", b"?").decode("latin-1")
            seen[q] = seen.get(q, 0) + 1
            if "want" in (msg.get("a") or {}):
                want_seen[q] = want_seen.get(q, 0) + 1
    cap.notes.append("query counts received from libtorrent during the run (both sessions): %s"
                     % json.dumps(seen, sort_keys=True))
    cap.notes.append("of those, queries carrying 'want' (sent by session A's IPv6 DHT node to our IPv4 "
                     "nodes, want=[n6]; not saved because not reproducible): %s" % json.dumps(want_seen, sort_keys=True))
    cap.notes.append("libtorrent DHT node ids this run: %s" % ", ".join(lt_ids))

    for n in FakeNode.instances:
        n.close()
    cur["ses"] = None
    ses = None  # destroy session B
    shutil.rmtree(tmpdir, ignore_errors=True)

    write_manifests(cap)
    if args.keys_only:
        print(json.dumps(keyset_summary(cap), indent=1, sort_keys=True))
    return 0


def check_namespace():
    """Abort unless the only interface with an address is loopback."""
    try:
        with open("/proc/net/route") as f:
            routes = f.read().splitlines()[1:]
    except OSError:
        routes = []
    ifaces = set(name for _idx, name in socket.if_nameindex())  # namespace-aware
    non_lo = [r for r in routes if r.split() and r.split()[0] != "lo"]
    if ifaces - {"lo"} or non_lo:
        sys.exit("refusing to run: network interfaces other than lo exist (%s). Run inside "
                 "`unshare -n sh -c 'ip link set lo up && /usr/bin/python3 %s'`"
                 % (sorted(ifaces), sys.argv[0]))


# --------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------


def shape(v):
    """bytes -> length, int -> value, list -> [shape...], dict -> {k: shape}"""
    if isinstance(v, bytes):
        return len(v)
    if isinstance(v, int):
        return v
    if isinstance(v, list):
        return [shape(i) for i in v]
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    return None


def types(d):
    def t(v):
        return {bytes: "bytes", int: "int", list: "list", dict: "dict"}[type(v)]
    return {k: t(v) for k, v in d.items()}


def to_json(v):
    """bytes -> hex string, int -> number, list -> array, dict -> object."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [to_json(i) for i in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v


def human(v, key=None, indent=0):
    pad = "  " * indent
    if isinstance(v, dict):
        lines = []
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                lines.append("%s%s:" % (pad, k))
                lines.extend(human(x, k, indent + 1))
            else:
                lines.append("%s%s: %s" % (pad, k, human_scalar(x, k)))
        return lines
    if isinstance(v, list):
        lines = []
        for x in v:
            lines.append("%s- %s" % (pad, human_scalar(x, key)))
        return lines
    return [pad + human_scalar(v, key)]


def human_scalar(x, key=None):
    if isinstance(x, int):
        return str(x)
    if isinstance(x, list):
        return "[]" if not x else "[" + ", ".join(human_scalar(i, key) for i in x) + "]"
    if isinstance(x, dict):
        return "{}"
    b = x
    desc = "(%d bytes)" % len(b)
    if key == "nodes" and len(b) % 26 == 0:
        return "%s %d IPv4 nodes: %s" % (desc, len(b) // 26,
                                          "; ".join("%s..@%s:%d" % (n[0][:8], n[1], n[2]) for n in parse_nodes(b, 4)))
    if key == "nodes6" and len(b) % 38 == 0:
        return "%s %d IPv6 nodes: %s" % (desc, len(b) // 38,
                                          "; ".join("%s..@[%s]:%d" % (n[0][:8], n[1], n[2]) for n in parse_nodes(b, 16)))
    if key in ("ip", "values") and len(b) in (6, 18):
        return "%s %s" % (desc, parse_peer(b))
    if key == "samples" and len(b) % 20 == 0:
        return "%s %d samples: %s" % (desc, len(b) // 20, ", ".join(b[i:i + 20].hex() for i in range(0, len(b), 20)))
    if key == "v" and len(b) == 4:
        v = "%s %r = client %r, bytes 0x%02x 0x%02x" % (desc, b, b[:2].decode("latin-1"), b[2], b[3])
        if b[:2] == b"LT":
            v += " (libtorrent: major, minor<<4|tiny = %d.%d.%d)" % (b[2], b[3] >> 4, b[3] & 15)
        return v
    if key in ("BFsd", "BFpe"):
        return "%s bloom filter, %d bits set" % (desc, sum(bin(c).count("1") for c in b))
    if all(32 <= c < 127 for c in b) and b:
        return "%s %r" % (desc, b.decode())
    return "%s hex %s" % (desc, b.hex())


def entry(fname, raw, direction, answers, note):
    msg = bdecode(raw)
    y = msg.get("y", b"").decode("latin-1")
    e = {
        "name": fname,
        "direction": "libtorrent_to_us" if direction == "lt" else "us_to_libtorrent",
        "size": len(raw),
        "sha1": hashlib.sha1(raw).hexdigest(),
        "y": y,
        "top_keys": shape(msg),
        "top_types": types(msg),
    }
    # strip nested dicts from top_keys for readability; they get own fields
    for k in ("a", "r"):
        if k in msg and isinstance(msg[k], dict):
            e["top_keys"][k] = "dict"
            e["%s_keys" % k] = shape(msg[k])
            e["%s_types" % k] = types(msg[k])
    if y == "q":
        e["method"] = msg.get("q", b"").decode("latin-1")
    if answers:
        e["answers"] = answers
        q = bdecode(open_raw(answers))
        e["method"] = q.get("q", b"").decode("latin-1")
    if y == "e":
        err = msg.get("e")
        if isinstance(err, list) and len(err) >= 2:
            e["error_code"] = err[0]
            e["error_message"] = err[1].decode("latin-1") if isinstance(err[1], bytes) else err[1]
    e["decoded"] = to_json(msg)
    if note:
        e["note"] = note
    return e


_RAW = {}


def open_raw(fname):
    return _RAW[fname]


def write_manifests(cap):
    version = lt.__version__
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for fname, (raw, *_rest) in cap.pkts.items():
        _RAW[fname] = raw
    order = sorted(cap.pkts, key=lambda f: (not f.startswith("lt_query"), f.split("_", 2)[-1], f))
    entries = [entry(f, *cap.pkts[f]) for f in order]
    doc = {
        "libtorrent_version": version,
        "captured": date,
        "libtorrent_dht_port": cap.port,
        "notes": cap.notes,
        "conventions": {
            "top_keys/a_keys/r_keys": "byte string -> its length; integer -> its value; list -> list of "
                                      "element shapes; nested dict 'a'/'r' -> \"dict\" (see a_keys/r_keys)",
            "*_types": "bencode type of each key: bytes|int|list|dict",
            "decoded": "full decoding; byte strings are hex, integers are JSON numbers",
        },
        "files": entries,
    }
    with open(os.path.join(cap.out, "manifest.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")

    L = []
    L.append("# Golden KRPC packets\n")
    L.append("Captured by `tests/data/capture_krpc.py` from **libtorrent %s** (Debian python3-libtorrent) "
             "on %s, inside a private network namespace (loopback only). libtorrent's DHT listened on "
             "127.0.0.1:%d and [::1]:%d; our Python nodes used 127.0.0.1:%d.. and [::1]:%d.. ."
             % (version, date, cap.port, cap.port, cap.port + 100, cap.port + 201))
    L.append("")
    L.append("Every `.bin` file is one raw UDP payload, byte for byte. Node ids, transaction ids of libtorrent's "
             "queries, tokens and BEP 42 `ip` fields vary between runs; the key sets do not. "
             "`manifest.json` has the machine-readable version of this list.\n")
    L.append("Naming: `lt_query_<m>.bin` = query libtorrent sent to us; `our_query_<x>.bin` = the exact query we "
             "sent; `lt_response_<x>.bin` / `lt_error_<x>.bin` = libtorrent's reply to `our_query_<x>.bin`.\n")
    if cap.notes:
        L.append("## Run notes\n")
        for n in cap.notes:
            L.append("- " + n)
        L.append("")
    L.append("## Files\n")
    for e in entries:
        raw = cap.pkts[e["name"]][0]
        L.append("### %s\n" % e["name"])
        what = {"libtorrent_to_us": "sent by libtorrent", "us_to_libtorrent": "sent by us"}[e["direction"]]
        kind = {"q": "query", "r": "response", "e": "error"}.get(e["y"], e["y"])
        line = "%s %s, method `%s`, %d bytes." % (what.capitalize(), kind, e.get("method", "?"), e["size"])
        if "answers" in e:
            line += " Answers `%s`." % e["answers"]
        if e.get("note"):
            line += " " + e["note"]
        L.append(line + "\n")
        L.append("```")
        L.extend(human(bdecode(raw)))
        L.append("```")
        L.append("")
    with open(os.path.join(cap.out, "MANIFEST.md"), "w") as f:
        f.write("\n".join(L))


def keyset_summary(cap):
    out = {}
    for fname, (raw, *_r) in cap.pkts.items():
        m = bdecode(raw)
        s = {"top": sorted(m)}
        for k in ("a", "r"):
            if isinstance(m.get(k), dict):
                s[k] = sorted(m[k])
        if "e" in m:
            s["e"] = to_json(m["e"])
        out[fname] = s
    return out


if __name__ == "__main__":
    sys.exit(main())
