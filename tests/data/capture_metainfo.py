#!/usr/bin/python3
"""Golden info dictionaries made by a real libtorrent, and libtorrent's view of them.

    /usr/bin/python3 tests/data/capture_metainfo.py [--out DIR]

Creates small files in a temporary directory, makes v1, v2-only and hybrid
torrents of them with libtorrent's create_torrent (no session, no network),
and writes each raw info dictionary as DIR/<name>.info plus manifest.json:
for each, libtorrent's reading of the torrent it made (name, piece length,
private flag, infohashes, every file with its path relative to the
torrent's directory, size and pad flag). tests/golden.rs checks
metainfo::parse_info against it; the .info files also seed the `metainfo`
fuzz target.

Python 3 standard library + Debian's python3-libtorrent only.
"""

import argparse
import json
import os
import sys
import tempfile

import libtorrent as lt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
from bencode_mini import bdecode  # noqa: E402

# name -> (files as (relative path, size), create_torrent flags, piece length, private)
CASES = {
    "v1_single": ([("ubuntu-mini.iso", 100_000)], lt.create_torrent.v1_only, 16384, False),
    "v1_multi_utf8": (
        [
            ("Café Müller/01 — Ouverture.flac", 40_000),
            ("Café Müller/02 日本語.flac", 30_000),
            ("Café Müller/cover.jpg", 5_000),
            ("Café Müller/empty.txt", 0),
        ],
        lt.create_torrent.v1_only,
        16384,
        True,
    ),
    "v2_single": ([("single.bin", 70_000)], lt.create_torrent.v2_only, 16384, False),
    "v2_nested": (
        [
            ("dataset/a/b/c/deep.bin", 20_000),
            ("dataset/a/top.bin", 50_000),
            ("dataset/b/readme.txt", 1_000),
            ("dataset/b/z/empty.dat", 0),
            ("dataset/Ελληνικά.txt", 17_000),
        ],
        lt.create_torrent.v2_only,
        16384,
        False,
    ),
    "hybrid_padded": (
        [
            ("hybrid/one.bin", 20_000),
            ("hybrid/sub/two.bin", 33_000),
            ("hybrid/sub/three.bin", 1),
        ],
        0,
        16384,
        False,
    ),
}


def make(root, name, files, flags, piece_length, private):
    base = os.path.join(root, name)
    for rel, size in files:
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(bytes((i * 7 + len(rel)) % 251 for i in range(size)))
    fs = lt.file_storage()
    top = files[0][0].split("/")[0] if len(files) > 1 or "/" in files[0][0] else files[0][0]
    lt.add_files(fs, os.path.join(base, top))
    ct = lt.create_torrent(fs, piece_length, flags=flags)
    ct.set_priv(private)
    ct.set_creator("")
    lt.set_piece_hashes(ct, base)
    ti = lt.torrent_info(lt.bdecode(lt.bencode(ct.generate())))
    # The exact bytes libtorrent hashed.
    info = bytes(ti.info_section())
    st = ti.files()
    name_prefix = ti.name() + os.sep
    out_files = []
    for i in range(st.num_files()):
        p = st.file_path(i)
        if p.startswith(name_prefix):
            p = p[len(name_prefix):]
        out_files.append({
            "path": p,
            "size": st.file_size(i),
            "pad": bool(st.file_flags(i) & lt.file_storage.flag_pad_file),
        })
    hashes = ti.info_hashes()
    return info, {
        "name": ti.name(),
        "piece_length": ti.piece_length(),
        "private": ti.priv(),
        "v1": str(hashes.v1) if hashes.has_v1() else None,
        "v2": str(hashes.v2) if hashes.has_v2() else None,
        "files": out_files,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "metainfo"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest = {"libtorrent": lt.__version__, "torrents": {}}
    with tempfile.TemporaryDirectory() as root:
        for name, (files, flags, plen, private) in CASES.items():
            info, view = make(root, name, files, flags, plen, private)
            assert bdecode(info) is not None
            with open(os.path.join(args.out, name + ".info"), "wb") as f:
                f.write(info)
            manifest["torrents"][name] = view
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
