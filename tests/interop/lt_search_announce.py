#!/usr/bin/python3
"""N libtorrent sessions that SEARCH for their torrent long before they ANNOUNCE it.

    /usr/bin/python3 tests/interop/lt_search_announce.py --crawler 127.0.0.1:P \\
        --crawler-id HEX40 --dir DIR [--sessions 8] [--first-ip 11] [--port 17700] \\
        [--search-seconds 15] [--search-interval 5] [--grind-bits 3] [--max-seconds 170]

This is how real clients meet a crawler: a client first looks for peers of a
torrent (get_peers) and only later, once it has (part of) the torrent, tells
the DHT that it is a peer (announce_peer). The crawler therefore learns the
infohash from a get_peers, when nobody is a peer yet, and the peer arrives
later in an announce_peer.

Session i listens on 127.0.0.(first-ip + i):port (TCP + UDP; its DHT node is
on that UDP socket), joins the DHT through the crawler (--crawler, given to
add_dht_node() as an ordinary node, NOT as a bootstrap router: libtorrent
keeps routers out of its routing table and only uses them while a lookup
has fewer than 3 nodes, so a router-crawler would see neither the searches
nor the announces) and seeds ONE torrent of its own (a small single- or
multi-file torrent it creates under DIR/s<i>, name
"dht-hunter-search-<i>..."). The sessions find each other through the
crawler's replies.

How the order "search long before announce" is made
----------------------------------------------------
1. Each torrent is added PAUSED (seed_mode, not auto-managed). A paused
   torrent is never announced by libtorrent (no DHT announce, no incoming
   peer connections).
2. Search phase: every session calls session.dht_get_peers(ih) for its own
   infohash at once and again every --search-interval seconds. This is a
   plain get_peers lookup (dht_privacy_lookups is off, so the real infohash
   is sent); it never sends announce_peer.
3. After --search-seconds, announce phase: each torrent is resumed and
   torrent_handle.force_dht_announce() is called. libtorrent then does its
   announce traversal (get_peers to get tokens, then announce_peer with
   implied_port=1, seed=1 to the closest nodes that gave a token).
   (session.dht_announce() itself cannot be called from Python 2.0.8: its
   flags type is not exposed, see README.md.)

What is checked (from libtorrent's own dht_pkt alerts, i.e. what really went
on the wire): per torrent the time of the first get_peers(ih) sent to the
crawler's endpoint and whether the crawler answered it, the time of the first
announce_peer(ih) sent to the crawler and whether the crawler answered it
without an error. The summary line carries these; the caller asserts
search_to_crawler_at < announce_to_crawler_at.

Reaching the crawler: libtorrent announces only to the 8 closest nodes (by
XOR distance to the infohash) that answered with a token. With 8 libtorrent
nodes plus the crawler, the crawler would be the farthest for about one
torrent in nine and never see its announce, which is no fault of the
crawler. So each torrent's content is varied (the size of its first file)
until the infohash shares its top --grind-bits bits with --crawler-id; the
crawler is then among the closest nodes for every torrent.

ut_metadata: when stdin reaches EOF (the caller is done) every session is
checked with fetch_metadata.py (a plain BEP 9 client on 127.0.0.1): it must
serve its torrent's metadata, so a torrent the crawler did not store was
fetchable.

stdout: JSON lines, "event" says which:
  session        {session, ip, port}
  torrent        {session, ip, port, infohash, name, total_size, num_files, files,
                  info_len, grind_attempts}
  search_phase   {t}                       (seconds since start, all t below too)
  announce_phase {t}
  search_sent    {session, infohash, t}    first get_peers(ih) to the crawler
  search_answered {session, infohash, t}
  announce_sent  {session, infohash, t}    first announce_peer(ih) to the crawler
  announce_answered {session, infohash, t, error?}
  incoming       {session, endpoint, t}    incoming BitTorrent connection
  ut_metadata    {session, infohash, ok, info_len?, name?, error?}
  error          {session, type, message}
  summary        {torrents: [{session, infohash, name, search_to_crawler_at,
                  search_answered, announce_to_crawler_at, announce_answered,
                  announce_error, first_announce_to_anyone_at, incoming,
                  ut_metadata_ok, get_peers_to_crawler, announces_to_crawler}],
                  search_seconds, search_phase_at, announce_phase_at, t}
                 (*_at: seconds since start or null; incoming: BitTorrent
                 connections the session accepted before the ut_metadata
                 check from other addresses than the sessions' own, i.e.
                 the crawler's)
Exits 0 (also when checks fail: the caller decides).

Safety: loopback only (--crawler must be loopback; peer connections are
IP-filtered to 127.0.0.0/8); run inside `unshare -n` (see README.md).
"""

import argparse
import ipaddress
import json
import os
import sys
import threading
import time

import libtorrent as lt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fetch_metadata  # noqa: E402
import lt_dht  # noqa: E402
import lt_seed  # noqa: E402
from bencode_mini import bdecode  # noqa: E402

T0 = time.time()


def now():
    return round(time.time() - T0, 3)


def emit(d):
    print(json.dumps(d, ensure_ascii=False), flush=True)


def spec_for(i, nonce):
    """Torrent i: even i single-file, odd i three files; nonce varies a size."""
    if i % 2 == 0:
        name = "dht-hunter-search-%d.bin" % i
        return {"name": name, "single": True, "piece_length": 16384,
                "files": [{"path": name, "size": 3000 + 1111 * i + nonce}]}
    name = "dht-hunter-search-%d" % i
    return {"name": name, "piece_length": 16384, "files": [
        {"path": "part-a.dat", "size": 2000 + 333 * i + nonce},
        {"path": "sub/part-b.dat", "size": 5000 + i},
        {"path": "sub/readme.txt", "size": 77},
    ]}


def prefix_matches(ih, other, bits):
    x = int.from_bytes(ih, "big") ^ int.from_bytes(other, "big")
    return bits == 0 or (x >> (160 - bits)) == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crawler", required=True, help="IP:PORT of the crawler's DHT node (loopback)")
    ap.add_argument("--crawler-id", required=True, help="the crawler's node id (hex40)")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--first-ip", type=int, default=11, help="session i on 127.0.0.(first-ip + i)")
    ap.add_argument("--port", type=int, default=17700, help="every session's listen port")
    ap.add_argument("--search-seconds", type=float, default=15.0)
    ap.add_argument("--search-interval", type=float, default=5.0)
    ap.add_argument("--grind-bits", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=170.0,
                    help="stop even if stdin stays open")
    args = ap.parse_args()

    host, _, port = args.crawler.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit("--crawler must be a loopback IP:PORT")
    boot_ep = (host, int(port))
    crawler = "%s:%d" % boot_ep
    crawler_id = bytes.fromhex(args.crawler_id)
    if len(crawler_id) != 20:
        sys.exit("--crawler-id must be 40 hex digits")
    if not (1 <= args.first_ip and args.first_ip + args.sessions <= 255):
        sys.exit("bad --first-ip / --sessions")

    # Sessions.
    filt = lt_dht.loopback_filter()
    sessions = []
    for i in range(args.sessions):
        ip = "127.0.0.%d" % (args.first_ip + i)
        # No bootstrap routers: libtorrent never puts a router (an entry
        # of dht_bootstrap_nodes) in its routing table and only falls
        # back to routers when a lookup has fewer than 3 nodes, so with a
        # router-crawler it would neither search nor announce through us.
        # Like a real client, it learns the crawler as an ordinary node
        # (add_dht_node below) and the other sessions from the crawler's
        # replies. 900 s: libtorrent's default announce interval.
        st = lt_dht.settings(ip, args.port, "", 900)
        # Outgoing connections from the session's own address, so that one
        # to itself (libtorrent connects to the peers the DHT returns, which
        # here is only itself) is not taken for the crawler's (127.0.0.1).
        st["outgoing_interfaces"] = ip
        st["user_agent"] = "dht-hunter-lt-search-%d" % i
        s = lt.session(st)
        s.set_ip_filter(filt)
        sessions.append({"i": i, "ses": s, "ip": ip, "handle": None, "ih": None, "desc": None,
                         "tids": {}, "search_at": None, "search_answered": None,
                         "announce_at": None, "announce_answered": None, "announce_error": None,
                         "incoming": 0, "announce_any_at": None, "gp_to_crawler": 0, "ann_to_crawler": 0, "ut_ok": None})
        emit({"event": "session", "session": i, "ip": ip, "port": args.port})

    own_ips = {x["ip"] for x in sessions}

    def on_pkt(x, a):
        m = lt_dht.PKT_RE.match(a.message())
        if m and m.group(1) == "==>" and x["announce_any_at"] is None and x["ih"] is not None:
            # The first announce_peer for our infohash to anyone (not only
            # the crawler): none may go out before the announce phase.
            try:
                msg = bdecode(bytes(a.pkt_buf))
                if msg.get("q") == b"announce_peer" and (msg.get("a") or {}).get("info_hash") == x["ih"]:
                    x["announce_any_at"] = now()
            except Exception:  # noqa: BLE001
                pass
        if not m or m.group(2) != crawler:
            return
        out = m.group(1) == "==>"
        try:
            msg = bdecode(bytes(a.pkt_buf))
        except Exception:  # noqa: BLE001
            return
        t = msg.get("t")
        y = msg.get("y")
        if out and y == b"q":
            q = msg.get("q")
            ih = (msg.get("a") or {}).get("info_hash")
            if ih != x["ih"] or q not in (b"get_peers", b"announce_peer"):
                return
            x["tids"][t] = q
            if q == b"get_peers":
                x["gp_to_crawler"] += 1
                if x["search_at"] is None:
                    x["search_at"] = now()
                    emit({"event": "search_sent", "session": x["i"], "infohash": ih.hex(), "t": x["search_at"]})
            else:
                x["ann_to_crawler"] += 1
                if x["announce_at"] is None:
                    x["announce_at"] = now()
                    emit({"event": "announce_sent", "session": x["i"], "infohash": ih.hex(),
                          "t": x["announce_at"], "port": (msg.get("a") or {}).get("port"),
                          "implied_port": (msg.get("a") or {}).get("implied_port")})
        elif not out and y in (b"r", b"e") and t in x["tids"]:
            q = x["tids"].pop(t)
            if q == b"get_peers" and x["search_answered"] is None and y == b"r":
                x["search_answered"] = now()
                emit({"event": "search_answered", "session": x["i"], "infohash": x["ih"].hex(),
                      "t": x["search_answered"]})
            elif q == b"announce_peer" and x["announce_answered"] is None:
                x["announce_answered"] = now()
                d = {"event": "announce_answered", "session": x["i"], "infohash": x["ih"].hex(),
                     "t": x["announce_answered"]}
                if y == b"e":
                    x["announce_error"] = lt_dht.hexish(msg.get("e"))
                    d["error"] = x["announce_error"]
                emit(d)

    def pump():
        for x in sessions:
            for a in x["ses"].pop_alerts():
                name = type(a).__name__
                if isinstance(a, lt.dht_pkt_alert):
                    on_pkt(x, a)
                elif name == "incoming_connection_alert":
                    ep = lt_dht.ep_str(a.endpoint)
                    if ep.rpartition(":")[0] not in own_ips:
                        x["incoming"] += 1
                    emit({"event": "incoming", "session": x["i"], "endpoint": ep, "t": now()})
                elif name in ("dht_error_alert", "udp_error_alert", "listen_failed_alert",
                              "torrent_error_alert", "session_error_alert"):
                    emit({"event": "error", "session": x["i"], "type": name, "message": a.message()})

    for x in sessions:
        x["ses"].add_dht_node(boot_ep)

    # Torrents, ground so that the crawler is close to each infohash (see
    # the docstring), added paused.
    for x in sessions:
        root = os.path.join(os.path.abspath(args.dir), "s%d" % x["i"])
        os.makedirs(root, exist_ok=True)
        for nonce in range(100000):
            ti, desc = lt_seed.make_torrent(spec_for(x["i"], nonce), root, "v1")
            ih = bytes.fromhex(desc["infohash"])
            if prefix_matches(ih, crawler_id, args.grind_bits):
                break
        else:
            sys.exit("could not grind an infohash")
        p = lt.add_torrent_params()
        p.ti = ti
        p.save_path = root
        p.flags = ((p.flags | lt.torrent_flags.seed_mode | lt.torrent_flags.paused)
                   & ~lt.torrent_flags.auto_managed)
        x["handle"] = x["ses"].add_torrent(p)
        x["ih"] = ih
        x["desc"] = desc
        emit({"event": "torrent", "session": x["i"], "ip": x["ip"], "port": args.port,
              "infohash": desc["infohash"], "name": desc["name"], "total_size": desc["total_size"],
              "num_files": desc["num_files"], "files": desc["files"], "info_len": desc["info_len"],
              "grind_attempts": nonce + 1})
        pump()

    stop = threading.Event()

    def wait_stdin():
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except Exception:  # noqa: BLE001
            pass
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()

    # Search phase.
    t_search = time.time()
    emit({"event": "search_phase", "t": now()})
    next_search = t_search
    while True:  # at least one search, also with --search-seconds 0
        if time.time() >= next_search:
            for x in sessions:
                x["ses"].dht_get_peers(lt.sha1_hash(x["ih"]))
            next_search += args.search_interval
        pump()
        if time.time() >= t_search + args.search_seconds or stop.is_set():
            break
        time.sleep(0.05)

    # Announce phase.
    t_announce = now()
    emit({"event": "announce_phase", "t": t_announce})
    for x in sessions:
        x["handle"].resume()
        x["handle"].force_dht_announce()
    end = T0 + args.max_seconds
    while not stop.is_set() and time.time() < end:
        pump()
        time.sleep(0.05)
    pump()

    # ut_metadata self-check of every seeding session.
    incoming_before = {x["i"]: x["incoming"] for x in sessions}
    for x in sessions:
        d = {"event": "ut_metadata", "session": x["i"], "infohash": x["ih"].hex()}
        try:
            info, _ext, _n = fetch_metadata.fetch(x["ip"], args.port, x["ih"], 10)
            name, _files = fetch_metadata.describe(info)
            d.update(ok=True, info_len=len(info), name=name)
            x["ut_ok"] = len(info) == x["desc"]["info_len"] and name == x["desc"]["name"]
        except Exception as e:  # noqa: BLE001
            d.update(ok=False, error="%s: %s" % (type(e).__name__, e))
            x["ut_ok"] = False
        emit(d)
        pump()

    emit({"event": "summary", "search_seconds": args.search_seconds, "search_phase_at": round(t_search - T0, 3),
          "announce_phase_at": t_announce, "t": now(), "torrents": [
        {"session": x["i"], "infohash": x["ih"].hex(), "name": x["desc"]["name"],
         "search_to_crawler_at": x["search_at"], "search_answered": x["search_answered"],
         "announce_to_crawler_at": x["announce_at"], "announce_answered": x["announce_answered"],
         "announce_error": x["announce_error"], "first_announce_to_anyone_at": x["announce_any_at"],
         "incoming": incoming_before[x["i"]],
         "ut_metadata_ok": x["ut_ok"], "get_peers_to_crawler": x["gp_to_crawler"],
         "announces_to_crawler": x["ann_to_crawler"]}
        for x in sessions]})
    for x in sessions:
        x["ses"].remove_torrent(x["handle"])
    sessions.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
