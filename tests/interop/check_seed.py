#!/usr/bin/python3
"""Self-test: run lt_seed.py, fetch every torrent's metadata with fetch_metadata.py.

    unshare -n sh -c 'ip link set lo up && /usr/bin/python3 tests/interop/check_seed.py'

Checks, per torrent: SHA-1 of the fetched info dict == infohash, info_len,
number of metadata pieces, name and file list match what lt_seed.py printed;
then closes lt_seed.py's stdin and expects "EXIT" and exit status 0.
Prints "N passed, M failed" and exits non-zero on any failure.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fetch_metadata  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=16881)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--format", default="v1")
    args = ap.parse_args()
    passed = failed = 0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "lt_seed.py"), "--dir", d,
                                 "--port", str(args.port), "--count", str(args.count), "--format", args.format,
                                 "--events"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
        torrents = []
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line == "READY":
                break
            torrents.append(json.loads(line))
        print("seeder ready after %.1fs with %d torrents" % (time.time() - t0, len(torrents)))
        for t in torrents:
            try:
                info, ext, n = fetch_metadata.fetch("127.0.0.1", t["port"], bytes.fromhex(t["infohash"]), 10)
                name, files = fetch_metadata.describe(info)
                assert len(info) == t["info_len"], (len(info), t["info_len"])
                assert n == t["metadata_pieces"], (n, t["metadata_pieces"])
                assert name == t["name"], (name, t["name"])
                assert files == t["files"], "file lists differ"
                print("ok   %-8s %s info_len=%d pieces=%d files=%d name=%s client=%r" % (
                    t["kind"], t["infohash"], len(info), n, len(files), name, ext.get("v")))
                passed += 1
            except Exception as e:  # noqa: BLE001
                print("FAIL %s %s: %s: %s" % (t.get("kind"), t["infohash"], type(e).__name__, e))
                failed += 1
        proc.stdin.close()
        rest = proc.stdout.read()
        rc = proc.wait(20)
        events = [json.loads(x) for x in rest.splitlines() if x.startswith("{")]
        print("seeder printed %d event lines after READY" % len(events))
        if rc == 0 and rest.rstrip().endswith("EXIT"):
            print("ok   seeder exited cleanly on stdin EOF")
            passed += 1
        else:
            print("FAIL seeder rc=%s tail=%r" % (rc, rest[-200:]))
            failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
