#!/usr/bin/python3
"""Run N libtorrent DHT nodes on 127.0.0.1 that bootstrap from OUR node.

    /usr/bin/python3 tests/interop/lt_dht.py --bootstrap 127.0.0.1:6881 \\
        [--sessions 3] [--base-port 17600] [--announce HEX40[,HEX40...]] \\
        [--lookup HEX40,...] [--interval 2] [--announce-interval 10] \\
        [--seconds 20] [--raw] [--log]

Every session listens on 127.0.0.1:(base-port + i) (TCP + UDP), has the DHT on
with dht_bootstrap_nodes = the given node (and add_dht_node() of it), and
LSD/UPnP/NAT-PMP off.  Every session announces every --announce infohash:
the Python bindings of libtorrent 2.0.8 cannot call session.dht_announce()
(its flags type is not exposed), so each infohash is added as a magnet-style
torrent (info-hash only); libtorrent then does a get_peers lookup and sends
announce_peer (port = its listen port, implied_port = 1, seed = 0) to the
nodes that gave it a token, and re-announces every --announce-interval s.
Every --interval seconds each session also calls dht_get_peers() for every
--announce/--lookup infohash and dht_sample_infohashes(bootstrap, random id).

stdout: one JSON object per line, "event" says which:
  session            {session, port, node_id}
  dht_bootstrap      {session}
  dht_pkt            {session, dir: "in"|"out", node: "ip:port", y, q?, t (hex),
                      keys (a/r keys), error?, raw? (hex, with --raw)}
  dht_get_peers_reply {session, infohash, peers: ["ip:port", ...]}   (our lookups)
  dht_reply          {session, infohash, num_peers}          (torrent announce result)
  dht_sample_infohashes {session, endpoint, interval, num_infohashes, num_samples,
                      samples: [hex40...], nodes: [[hex40, "ip:port"], ...]}
  dht_announce       {session, infohash, ip, port}            (announce_peer we received)
  dht_get_peers      {session, infohash}                      (get_peers we received)
  dht_outgoing_get_peers {session, infohash, obfuscated_infohash, endpoint}
  error              {session, type, message}
  dht_log            {session, message}                       (with --log only)
  summary            {sessions: [{session, port, node_id, sent: {method: n},
                      received: {method: n}, routing_table_nodes}], seconds}
Then it exits 0 after --seconds (default 20) seconds.

Safety: only loopback bootstrap addresses are accepted; peer connections are
IP-filtered to 127.0.0.0/8 and ::1; still, run it inside `unshare -n` (see
README.md): libtorrent contacts whatever nodes our DHT node hands out.
"""

import argparse
import ipaddress
import json
import os
import re
import shutil
import sys
import time

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bencode_mini import bdecode  # noqa: E402


def emit(d):
    print(json.dumps(d, ensure_ascii=False), flush=True)


def settings(ip, port, bootstrap, announce_interval):
    wanted = {
        "listen_interfaces": "%s:%d" % (ip, port),
        "outgoing_interfaces": "",
        "enable_dht": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": bootstrap,
        # loopback nodes are "not routable": without these libtorrent would
        # drop them from its routing table / lookups.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        # all our test nodes share 127.0.0.1: the per-IP rate limit (default
        # 5 queries/s) would block them
        "dht_block_ratelimit": 10000,
        "dht_upload_rate_limit": 10 * 1024 * 1024,
        "dht_announce_interval": announce_interval,
        "dht_max_fail_count": 100,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": int(lt.alert.category_t.all_categories),
        "alert_queue_size": 100000,
    }
    known = lt.default_settings()
    return {k: v for k, v in wanted.items() if k in known}


def loopback_filter():
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1)
    f.add_rule("127.0.0.0", "127.255.255.255", 0)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    f.add_rule("::1", "::1", 0)
    return f


def ep_str(ep):
    try:
        host, port = ep[0], ep[1]
    except Exception:
        return str(ep)
    return ("[%s]:%d" if ":" in str(host) else "%s:%d") % (host, port)


def hexish(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [hexish(x) for x in v]
    if isinstance(v, dict):
        return {k: hexish(x) for k, x in v.items()}
    return v


def node_pair(n):
    """(node_id, endpoint) from whatever the bindings give (dict or tuple)."""
    if isinstance(n, dict):
        nid = n.get("nid", n.get("id"))
        ep = n.get("endpoint", n.get("ep"))
    else:
        nid, ep = n[0], n[1]
    return [str(nid) if not isinstance(nid, bytes) else nid.hex(), ep_str(ep)]


PKT_RE = re.compile(r"^(<==|==>)\s*\[?([^\]\s]+)\]?\s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="HOST:PORT of our DHT node (loopback only)")
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--base-port", type=int, default=17600)
    ap.add_argument("--distinct-ips", action="store_true",
                    help="session i listens on 127.0.0.(2+i) instead of 127.0.0.1 (nodes that keep "
                         "one routing entry per IP then see every session)")
    ap.add_argument("--announce", default="")
    ap.add_argument("--lookup", default="")
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--announce-interval", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--raw", action="store_true", help="include raw packet hex in dht_pkt events")
    ap.add_argument("--log", action="store_true", help="also emit dht_log events")
    ap.add_argument("--no-pkt", action="store_true", help="do not emit dht_pkt events")
    args = ap.parse_args()

    host, _, port = args.bootstrap.rpartition(":")
    host = host.strip("[]")
    try:
        if not ipaddress.ip_address(host).is_loopback:
            sys.exit("--bootstrap must be a loopback address (got %s)" % host)
    except ValueError:
        sys.exit("--bootstrap must be a literal loopback IP:PORT (got %s)" % args.bootstrap)
    boot_ep = (host, int(port))
    boot_str = ("[%s]:%d" if ":" in host else "%s:%d") % boot_ep

    def parse_list(s):
        out = []
        for x in s.split(","):
            x = x.strip()
            if x:
                if len(x) != 40:
                    sys.exit("bad infohash %r" % x)
                out.append(bytes.fromhex(x))
        return out

    announce = parse_list(args.announce)
    lookups = announce + [x for x in parse_list(args.lookup) if x not in announce]

    sessions = []
    filt = loopback_filter()
    for i in range(args.sessions):
        p = args.base_port + i
        ip = "127.0.0.%d" % (2 + i) if args.distinct_ips else "127.0.0.1"
        s = lt.session(settings(ip, p, boot_str, args.announce_interval))
        s.set_ip_filter(filt)
        sessions.append({"i": i, "ses": s, "port": p, "node_id": None, "sent": {}, "received": {},
                         "handles": []})

    def handle(x, a):
        i = x["i"]
        name = type(a).__name__
        if isinstance(a, lt.dht_pkt_alert):
            m = PKT_RE.match(a.message())
            d = {"event": "dht_pkt", "session": i,
                 "dir": ("in" if m and m.group(1) == "<==" else "out"),
                 "node": m.group(2) if m else None}
            raw = bytes(a.pkt_buf)
            try:
                msg = bdecode(raw)
                y = msg.get("y", b"").decode("latin-1")
                d["y"] = y
                d["t"] = msg.get("t", b"").hex() if isinstance(msg.get("t"), bytes) else None
                if y == "q":
                    q = msg.get("q", b"").decode("latin-1")
                    d["q"] = q
                    d["keys"] = sorted((msg.get("a") or {}).keys())
                    if "info_hash" in (msg.get("a") or {}):
                        d["info_hash"] = msg["a"]["info_hash"].hex()
                    book = x["sent"] if d["dir"] == "out" else x["received"]
                    book[q] = book.get(q, 0) + 1
                elif y == "r":
                    d["keys"] = sorted((msg.get("r") or {}).keys())
                elif y == "e":
                    d["error"] = hexish(msg.get("e"))
                    if isinstance(d["error"], list) and len(d["error"]) > 1:
                        try:
                            d["error"][1] = bytes.fromhex(d["error"][1]).decode("utf-8", "replace")
                        except Exception:
                            pass
            except Exception as e:  # noqa: BLE001
                d["decode_error"] = str(e)
            if args.raw:
                d["raw"] = raw.hex()
            if not args.no_pkt:
                emit(d)
        elif isinstance(a, lt.dht_sample_infohashes_alert):
            emit({"event": "dht_sample_infohashes", "session": i, "endpoint": ep_str(a.endpoint),
                  "interval": int(a.interval.total_seconds()) if hasattr(a.interval, "total_seconds")
                  else a.interval,
                  "num_infohashes": a.num_infohashes, "num_samples": a.num_samples,
                  "samples": [str(h) for h in a.samples],
                  "nodes": [node_pair(n) for n in a.nodes]})
        elif isinstance(a, lt.dht_get_peers_reply_alert):
            emit({"event": "dht_get_peers_reply", "session": i, "infohash": str(a.info_hash),
                  "peers": [ep_str(p) for p in a.peers()]})
        elif isinstance(a, lt.dht_reply_alert):
            emit({"event": "dht_reply", "session": i, "infohash": str(a.handle.info_hashes().v1),
                  "num_peers": a.num_peers})
        elif isinstance(a, lt.dht_announce_alert):
            emit({"event": "dht_announce", "session": i, "infohash": str(a.info_hash),
                  "ip": str(a.ip), "port": a.port})
        elif isinstance(a, lt.dht_get_peers_alert):
            emit({"event": "dht_get_peers", "session": i, "infohash": str(a.info_hash)})
        elif isinstance(a, lt.dht_outgoing_get_peers_alert):
            emit({"event": "dht_outgoing_get_peers", "session": i, "infohash": str(a.info_hash),
                  "obfuscated_infohash": str(a.obfuscated_info_hash), "endpoint": ep_str(a.endpoint)})
        elif isinstance(a, lt.dht_bootstrap_alert):
            emit({"event": "dht_bootstrap", "session": i})
        elif name in ("dht_error_alert", "udp_error_alert", "listen_failed_alert", "torrent_error_alert",
                      "session_error_alert"):
            emit({"event": "error", "session": i, "type": name, "message": a.message()})
        elif isinstance(a, lt.dht_log_alert) and args.log:
            emit({"event": "dht_log", "session": i, "message": a.message()})

    # learn node ids, then add the bootstrap node explicitly too
    deadline = time.time() + 10
    while time.time() < deadline and any(x["node_id"] is None for x in sessions):
        for x in sessions:
            for a in x["ses"].pop_alerts():
                m = a.message()
                if "DHT tracker with node id" in m and x["node_id"] is None:
                    x["node_id"] = m.split("node id: ")[1].strip()
                    emit({"event": "session", "session": x["i"], "port": x["port"], "node_id": x["node_id"]})
                else:
                    # Alerts are only valid until the next pop_alerts():
                    # handle them now (keeping them for later crashed
                    # python3-libtorrent with a use-after-free).
                    handle(x, a)
        time.sleep(0.05)
    for x in sessions:
        if x["node_id"] is None:
            emit({"event": "error", "session": x["i"], "type": "startup", "message": "DHT did not start"})
        x["ses"].add_dht_node(boot_ep)

    # announce: add every infohash as an info-hash-only torrent in every session
    tmp = os.path.join("/tmp", "lt_dht_%d" % os.getpid())
    for x in sessions:
        for ih in announce:
            p = lt.add_torrent_params()
            p.info_hashes = lt.info_hash_t(lt.sha1_hash(ih))
            p.save_path = os.path.join(tmp, str(x["i"]))
            p.name = ih.hex()
            p.flags &= ~lt.torrent_flags.auto_managed
            p.flags &= ~lt.torrent_flags.paused
            x["handles"].append(x["ses"].add_torrent(p))


    t_start = time.time()
    end = t_start + args.seconds
    next_tick = t_start + 0.5
    while time.time() < end:
        now = time.time()
        if now >= next_tick:
            for x in sessions:
                for ih in lookups:
                    x["ses"].dht_get_peers(lt.sha1_hash(ih))
                x["ses"].dht_sample_infohashes(boot_ep, lt.sha1_hash(os.urandom(20)))
            next_tick = now + args.interval
        for x in sessions:
            for a in x["ses"].pop_alerts():
                handle(x, a)
        time.sleep(0.05)

    for x in sessions:
        x["ses"].post_dht_stats()
    time.sleep(0.3)
    summary = []
    for x in sessions:
        rt = None
        for a in x["ses"].pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                rt = sum(b["num_nodes"] for b in a.routing_table)
            else:
                handle(x, a)
        summary.append({"session": x["i"], "port": x["port"], "node_id": x["node_id"], "sent": x["sent"],
                        "received": x["received"], "routing_table_nodes": rt})
    emit({"event": "summary", "seconds": round(time.time() - t_start, 1), "sessions": summary})
    for x in sessions:
        for h in x["handles"]:
            x["ses"].remove_torrent(h)
    sessions.clear()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
