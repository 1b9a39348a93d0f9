#!/usr/bin/env python3
"""A libtorrent 2.0 DHT node on 127.0.0.1, for benches/krpc_answer.rs.

It answers queries and does nothing else: no bootstrap nodes, no torrents,
LSD/UPnP/NAT-PMP off, listening on 127.0.0.1 only. The per-IP incoming limit
(dht_block_ratelimit, default 5 queries/s per source IP) and the outgoing
DHT byte limit (dht_upload_rate_limit, default 8000 B/s) are raised so that
they do not cap a flood, and the socket buffers are raised; see tests/interop/README.md for why each setting
matters on loopback.

Prints `READY <port>` once the DHT socket is up, then runs until stdin
reaches EOF or --seconds pass (whichever comes first), and exits 0.

    /usr/bin/python3 benches/lt_dht_node.py --port 0 --seconds 60
"""

import argparse
import select
import sys
import time

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=120.0)
    args = ap.parse_args()
    if not 0 <= args.port < 65536:
        sys.exit("bad --port")

    wanted = {
        "listen_interfaces": "127.0.0.1:%d" % args.port,
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "dht_block_ratelimit": 1000000,
        "dht_upload_rate_limit": 1 << 30,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "enable_outgoing_utp": False,
        "enable_outgoing_tcp": False,
        # Socket buffers like the other servers' (the kernel caps plain
        # SO_RCVBUF at net.core.rmem_max, 4 MiB here): with the OS default
        # (208 KiB) a burst of a few hundred queries overflows it.
        "recv_socket_buffer_size": 4 << 20,
        "send_socket_buffer_size": 4 << 20,
        "alert_mask": 0,
    }
    known = lt.default_settings()
    settings = {k: v for k, v in wanted.items() if k in known}
    ses = lt.session(settings)

    deadline = time.monotonic() + args.seconds
    while ses.listen_port() == 0 or not ses.is_dht_running():
        if time.monotonic() > deadline:
            sys.exit("libtorrent did not start listening")
        time.sleep(0.02)
    print("READY %d" % ses.listen_port(), flush=True)

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([sys.stdin], [], [], min(left, 0.5))
        if r and not sys.stdin.buffer.read1(4096):
            break
    del ses


if __name__ == "__main__":
    main()
