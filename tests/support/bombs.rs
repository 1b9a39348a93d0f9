//! Hostile and large info dictionaries for the metainfo tests, built to
//! about `target` bytes (shared by several test binaries: `#[path]`).
#![allow(dead_code)]

/// Wraps a v2 `file tree` into an info dictionary (keys in order).
pub fn v2_info(tree: &[u8]) -> Vec<u8> {
    let mut out = b"d9:file tree".to_vec();
    out.extend_from_slice(tree);
    out.extend_from_slice(b"12:meta versioni2e4:name4:bomb12:piece lengthi16384ee");
    out
}

fn v2_leaves(tree: &mut Vec<u8>, target: usize) -> usize {
    let mut n = 0;
    while tree.len() < target {
        tree.extend_from_slice(format!("8:{n:08}d0:d6:lengthi1eee").as_bytes());
        n += 1;
    }
    n
}

/// One directory holding as many one-byte files as fit.
pub fn wide_v2(target: usize) -> (Vec<u8>, usize) {
    let mut tree = b"d".to_vec();
    let n = v2_leaves(&mut tree, target);
    tree.push(b'e');
    (v2_info(&tree), n)
}

/// The same files at the bottom of a chain of `depth` directories whose
/// names are `name_len` bytes long: every file's path repeats the chain.
pub fn deep_v2(target: usize, depth: usize, name_len: usize) -> (Vec<u8>, usize) {
    let mut tree = b"d".to_vec();
    for level in 0..depth {
        let name = format!("{level:0name_len$}");
        tree.extend_from_slice(format!("{}:{name}d", name.len()).as_bytes());
    }
    let n = v2_leaves(&mut tree, target);
    tree.extend(std::iter::repeat_n(b'e', depth + 1));
    (v2_info(&tree), n)
}

/// As many empty directories as fit (no file at all).
pub fn empty_dirs_v2(target: usize) -> Vec<u8> {
    let mut tree = b"d".to_vec();
    let mut n = 0u64;
    while tree.len() < target {
        tree.extend_from_slice(format!("8:{n:08}de").as_bytes());
        n += 1;
    }
    tree.push(b'e');
    v2_info(&tree)
}

/// A v1 multi-file dictionary of minimal entries, each path `depth`
/// components deep (two-byte directories: one-byte ones would need more
/// values than `Limits::METADATA` allows in 10 MiB).
pub fn v1(target: usize, depth: usize) -> (Vec<u8>, usize) {
    let mut out = b"d5:filesl".to_vec();
    let mut n = 0;
    while out.len() < target {
        out.extend_from_slice(b"d6:lengthi1e4:pathl");
        out.extend(std::iter::repeat_n(&b"2:ab"[..], depth - 1).flatten());
        out.extend_from_slice(format!("8:{n:08}ee").as_bytes());
        n += 1;
    }
    out.extend_from_slice(b"e4:name4:bomb12:piece lengthi16384ee");
    (out, n)
}
