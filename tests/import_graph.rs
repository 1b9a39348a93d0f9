//! The crate's top-level modules form a DAG: no module reaches, through
//! `crate::` paths in its code, a module that reaches back to it. A cycle
//! is how "one concept, one place" erodes (each side grows a little of the
//! other), so it is checked on every test run rather than by eye.
//!
//! What counts: `crate::<module>` in the code of `src/<module>/**.rs` or
//! `src/<module>.rs`, comments and unit-test modules left out (tests may
//! reach anywhere). `super::` paths stay inside one top-level module and
//! cannot form a cycle between two.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of one file: comment lines and an inline `mod tests` dropped.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::name` in `code`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `dht_hunter::crate::` cannot occur; a preceding identifier
        // character means a longer name (`my_crate::`).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut g = Graph::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The crate root and the binaries sit above every module.
        if ["lib", "main", "bin"].contains(&top.as_str()) || rel.ends_with("tests.rs") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        let deps = g.entry(top.clone()).or_default();
        for r in crate_refs(&code) {
            if r != top {
                deps.insert(r);
            }
        }
    }
    g
}

/// One cycle of `g`, as the path that closes it, if there is any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        v: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(v) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == v).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(v.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(v.to_string(), Mark::Open);
        path.push(v.to_string());
        for w in g.get(v).into_iter().flatten() {
            if let Some(c) = visit(g, w, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(v.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for v in g.keys() {
        if let Some(c) = visit(g, v, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_checker_finds_a_planted_cycle_and_ignores_comments() {
    let code = code_of(
        "use crate::a::X;\n// crate::c::in_a_comment\nfn f() { my_crate::b(); crate::b::g(); }\n\
         #[cfg(test)]\nmod tests { use crate::d; }",
    );
    assert_eq!(
        crate_refs(&code),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(
        find_cycle(&g).unwrap(),
        ["a", "b", "c", "a"].map(String::from).to_vec()
    );
    g.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn top_level_modules_form_no_cycle() {
    for (name, src) in [
        ("dht-hunter", concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        ("shards", concat!(env!("CARGO_MANIFEST_DIR"), "/shards/src")),
    ] {
        let g = graph_of(Path::new(src));
        assert!(g.len() > 3, "{name}: read only {} modules", g.len());
        if let Some(cycle) = find_cycle(&g) {
            panic!("{name}: import cycle {}", cycle.join(" -> "));
        }
    }
}
