//! The module layering of `daemon/src`, checked from the source (lib.rs
//! states it): dependencies point one way,
//!
//! ```text
//!   {model, net} → config → trust → store → consensus → {services, steering} → api → {ui, app}
//! ```
//!
//! `metrics` is a leaf anyone may use, and there is no import cycle between
//! files. Every `crate::…`, `super::…` and `self::…` path outside comments is
//! resolved to the file of the deepest module it names, so a file that
//! reaches a sibling through its parent's re-exports (`super::Thing` from
//! `a/b.rs`, where `a/mod.rs` re-exports `Thing` from `a/c.rs`) depends on
//! `a/mod.rs`, which depends on `a/b.rs`: a cycle, reported. Test modules
//! (`tests.rs`, `tests/`, and a file's trailing `#[cfg(test)] mod tests`) may
//! reach anything they test and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rank of each top-level module: a module may depend only on lower ranks
/// (and on `metrics`). Equal ranks are siblings that must not know each other.
const LAYERS: &[(&str, u32)] = &[
    ("model", 0),
    ("net", 0),
    ("config", 1),
    ("trust", 2),
    ("store", 3),
    ("consensus", 4),
    ("services", 5),
    ("steering", 5),
    ("api", 6),
    ("ui", 7),
    ("app", 7),
    ("fuzzing", 8),
];
const LEAF: &str = "metrics";

struct Source {
    /// Module path, e.g. `["consensus", "network", "client"]`.
    module: Vec<String>,
    file: PathBuf,
    text: String,
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                continue; // the crate root and the binary wire everything
            }
            if module.iter().any(|m| m == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            out.push(Source {
                module,
                file: rel.to_path_buf(),
                text,
            });
        }
    }
    out
}

/// The code of a file without comments and without its trailing test module.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests {"))
        {
            break;
        }
        let mut line = line.find("//").map_or(line, |i| &line[..i]).to_owned();
        // `pub(in crate::x)` names a module for visibility, not a dependency.
        while let Some(i) = line.find("pub(in ") {
            let end = line[i..].find(')').map_or(line.len(), |j| i + j + 1);
            line.replace_range(i..end, "pub");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Every path that starts with `crate`, `super` or `self`, or with the name
/// of one of `children` (a module's own submodules, which it may name bare:
/// `rows::load_applied`), with `use` groups (`use super::{a, b::c}`)
/// expanded. Bare paths come back as `self::child::…`.
fn paths(code: &str, children: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `use` statements, groups expanded.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let stmt_end = rest[i..].find(';').map_or(rest.len(), |j| i + j);
        if before_ok {
            let stmt: String = rest[i + 4..stmt_end]
                .replace(" as ", "@")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            expand(&stmt, &mut Vec::new(), &mut out);
        }
        rest = &rest[stmt_end.min(rest.len() - 1) + 1..];
        if rest.is_empty() {
            break;
        }
    }
    // Inline paths such as `crate::metrics::get()`, and bare child paths.
    let bytes = code.as_bytes();
    let heads: Vec<String> = ["crate", "super", "self"]
        .iter()
        .map(|h| (*h).to_owned())
        .chain(children.iter().cloned())
        .map(|h| format!("{h}::"))
        .collect();
    for head in &heads {
        let mut from = 0;
        while let Some(j) = code[from..].find(head) {
            let start = from + j;
            from = start + head.len();
            if start > 0
                && (bytes[start - 1].is_ascii_alphanumeric()
                    || bytes[start - 1] == b'_'
                    || bytes[start - 1] == b':')
            {
                continue;
            }
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            let mut p: Vec<String> = code[start..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if children.contains(&p[0]) {
                p.insert(0, "self".to_owned());
            }
            // `super::{a, b}` is a `use` group, expanded above.
            if p.len() > 1 {
                out.push(p);
            }
        }
    }
    for p in &mut out {
        if p.first().is_some_and(|h| children.contains(h)) {
            p.insert(0, "self".to_owned());
        }
    }
    out.retain(|p| {
        matches!(
            p.first().map(String::as_str),
            Some("crate" | "super" | "self")
        )
    });
    out
}

/// Expands one `use` tree (whitespace removed) into its paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let n = prefix.len();
        prefix.extend(head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], prefix, out);
        prefix.truncate(n);
    } else if !tree.is_empty() {
        let mut p = prefix.clone();
        let tree = tree.split('@').next().unwrap_or(tree);
        p.extend(
            tree.split("::")
                .filter(|s| !s.is_empty() && *s != "*")
                .map(str::to_owned),
        );
        out.push(p);
    }
}

/// The file a path leads to, seen from `from` (a module path).
fn resolve<'a>(
    path: &[String],
    from: &[String],
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a PathBuf> {
    // `self` is the module itself, `super` its parent, whether the module's
    // file is `x.rs` or `x/mod.rs`.
    let mut base: Vec<String> = from.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut full = base;
    full.extend(rest.iter().cloned());
    // The deepest prefix that is a module with a file.
    (1..=full.len()).rev().find_map(|n| modules.get(&full[..n]))
}

fn rank(top: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, r)| *r)
}

/// Depth-first search with colours (1 = on the stack, 2 = done); each edge
/// back to a node on the stack closes a cycle.
fn visit<'a>(
    n: &'a PathBuf,
    edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    colour: &mut BTreeMap<&'a PathBuf, u8>,
    stack: &mut Vec<&'a PathBuf>,
    cycles: &mut Vec<String>,
) {
    colour.insert(n, 1);
    stack.push(n);
    for m in edges.get(n).into_iter().flatten() {
        match colour.get(m).copied().unwrap_or(0) {
            0 => visit(m, edges, colour, stack, cycles),
            1 => {
                let i = stack.iter().position(|x| *x == m).unwrap_or(0);
                let mut c: Vec<String> =
                    stack[i..].iter().map(|p| p.display().to_string()).collect();
                c.push(m.display().to_string());
                cycles.push(c.join(" -> "));
            }
            _ => {}
        }
    }
    stack.pop();
    colour.insert(n, 2);
}

#[test]
fn dependencies_point_one_way_and_files_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    assert!(files.len() > 30, "found only {} source files", files.len());
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|s| (s.module.clone(), s.file.clone()))
        .collect();
    let module_of: BTreeMap<&PathBuf, &Vec<String>> =
        files.iter().map(|s| (&s.file, &s.module)).collect();

    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut violations = Vec::new();
    for s in &files {
        let children: Vec<String> = modules
            .keys()
            .filter(|m| m.len() == s.module.len() + 1 && m.starts_with(&s.module))
            .map(|m| m[m.len() - 1].clone())
            .collect();
        let targets = edges.entry(s.file.clone()).or_default();
        for p in paths(&code(&s.text), &children) {
            let Some(to) = resolve(&p, &s.module, &modules) else {
                continue;
            };
            if *to == s.file {
                continue;
            }
            targets.insert(to.clone());
            let (a, b) = (&s.module[0], &module_of[to][0]);
            if a == b || b == LEAF {
                continue;
            }
            let ok = a != LEAF && matches!((rank(a), rank(b)), (Some(ra), Some(rb)) if rb < ra);
            if !ok {
                violations.push(format!(
                    "{} uses {} (`{}`): {a} may not depend on {b}",
                    s.file.display(),
                    to.display(),
                    p.join("::")
                ));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "layering (model → config → trust → store → consensus → {{services, steering}} → api → {{ui, app}}; metrics a leaf) broken:\n{}",
        violations.join("\n")
    );

    // Cycles.
    let mut colour: BTreeMap<&PathBuf, u8> = BTreeMap::new();
    let mut cycles = Vec::new();
    for n in edges.keys() {
        if colour.get(n).copied().unwrap_or(0) == 0 {
            visit(n, &edges, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between files:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_checker_sees_groups_supers_and_inline_paths() {
    let text = code(
        "use super::{codec, error::{redb_err, StoreError}};\n\
         use crate::model::State as S; // crate::app::x in a comment\n\
         fn f() { crate::metrics::get(); }\n\
         #[cfg(test)]\nmod tests { use crate::app::x; }\n",
    );
    // `#[cfg(test)] mod tests;` declares a test file; the code goes on.
    let declared = code("#[cfg(test)]\nmod tests;\nuse crate::model::Mac;\n");
    let mut d = paths(&declared, &[]);
    d.dedup();
    assert_eq!(d, [["crate", "model", "Mac"]]);
    assert!(paths(&code("pub(in crate::app) fn f() {}"), &[]).is_empty());
    let mut p: Vec<String> = paths(&text, &[]).iter().map(|p| p.join("::")).collect();
    p.sort();
    p.dedup();
    assert_eq!(
        p,
        [
            "crate::metrics::get",
            "crate::model::State",
            "super::codec",
            "super::error::StoreError",
            "super::error::redb_err",
        ]
    );
    let modules: BTreeMap<Vec<String>, PathBuf> = [
        (vec!["store".to_owned()], PathBuf::from("store/mod.rs")),
        (
            vec!["store".to_owned(), "error".to_owned()],
            PathBuf::from("store/error.rs"),
        ),
    ]
    .into();
    let from = ["store".to_owned(), "rows".to_owned()];
    let to = resolve(
        &["super".into(), "error".into(), "StoreError".into()],
        &from,
        &modules,
    );
    assert_eq!(to, Some(&PathBuf::from("store/error.rs")));
    let to = resolve(&["super".into(), "Store".into()], &from, &modules);
    assert_eq!(to, Some(&PathBuf::from("store/mod.rs")));
    // A module names its own submodules bare.
    let p = paths(
        "let a = rows::load_applied(x); use codec::decode;",
        &["rows".into(), "codec".into()],
    );
    let p: Vec<String> = p.iter().map(|p| p.join("::")).collect();
    assert!(p.contains(&"self::rows::load_applied".to_owned()), "{p:?}");
    assert!(p.contains(&"self::codec::decode".to_owned()), "{p:?}");
}
