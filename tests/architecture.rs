//! The layout rules of the README's architecture section, checked on the source text (rustfmt
//! layout assumed): no import cycles between files, no file over 800 lines, no function over
//! 120 lines, no egui or eframe below the application, threads spawned only by `jobs`.
//!
//! `KNOWN` lists what may break a rule for a while (empty: every rule holds); an entry that no
//! longer breaks its rule fails the test too, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files and functions that still break a rule, as `"rule: what"`.
const KNOWN: &[&str] = &[];

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 120;
/// Folders below the application: they never name egui or eframe.
const HEADLESS: &[&str] = &["data", "preprocess", "kernels", "ml", "project"];

/// A source file: its module path (`["ml", "train", "run"]`) and its lines.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    lines: Vec<String>,
}

impl Source {
    fn rel(&self) -> String {
        self.path.display().to_string()
    }

    /// The lines before a trailing `#[cfg(test)] mod tests`.
    fn code(&self) -> &[String] {
        let end = (0..self.lines.len())
            .find(|&i| {
                self.lines[i] == "#[cfg(test)]"
                    && self
                        .lines
                        .get(i + 1)
                        .is_some_and(|l| l.starts_with("mod tests"))
            })
            .unwrap_or(self.lines.len());
        &self.lines[..end]
    }
}

fn sources() -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") && p != Path::new("src/main.rs") {
                let rel = p.strip_prefix("src").unwrap();
                let mut module: Vec<String> = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                    module.pop();
                }
                let text = std::fs::read_to_string(&p).unwrap();
                out.push(Source {
                    path: p,
                    module,
                    lines: text.lines().map(str::to_owned).collect(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The line without a `//` comment (strings holding `//` are rare enough in this code).
fn strip_comment(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Expands a `use` tree (`crate::a::{b, c::{d, e}}`) into full paths of segments.
fn expand(tree: &str) -> Vec<Vec<String>> {
    // `a as b` keeps `a`; then whitespace goes.
    let tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let tree: String = tree
        .replace(" as ", "~")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut out = Vec::new();
    expand_into(&tree, &mut Vec::new(), &mut out);
    out
}

fn expand_into(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.len() - 1];
        // Split at top-level commas.
        let (mut depth, mut start) = (0, 0);
        let mut parts = Vec::new();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        let n = prefix.len();
        prefix.extend(head);
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            expand_into(part, prefix, out);
        }
        prefix.truncate(n);
    } else {
        let name = tree.split('~').next().unwrap_or(tree);
        let mut path = prefix.clone();
        path.extend(
            name.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        out.push(path);
    }
}

/// Every path a file names: its `use` trees and the `crate::`/`super::` paths in its code.
fn named_paths(src: &Source) -> Vec<Vec<String>> {
    let code: Vec<&str> = src.code().iter().map(|l| strip_comment(l)).collect();
    let text = code.join("\n");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    // `use` statements, possibly over several lines.
    while let Some(at) = find_use(rest) {
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = after[..end]
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ");
        let tree = tree.trim_start_matches("use ");
        out.extend(expand(tree));
        rest = &after[end..];
    }
    // Inline paths.
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") {
            out.push(
                word.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

/// The start of the next `use` statement (at the start of a line, maybe `pub`).
fn find_use(text: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("use ") || t.starts_with("pub use ") || t.starts_with("pub(crate) use ") {
            return Some(at + (line.len() - t.len()));
        }
        at += line.len();
    }
    None
}

/// The file a path leads to (the deepest module it names), from the file `src`.
fn resolve(src: &Source, path: &[String], modules: &BTreeMap<Vec<String>, usize>) -> Option<usize> {
    let mut here = src.module.clone();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            here.clear();
            rest = &path[1..];
        }
        Some("super") => {
            let mut r = path;
            while r.first().is_some_and(|s| s == "super") {
                here.pop();
                r = &r[1..];
            }
            rest = r;
        }
        Some("self") => rest = &path[1..],
        Some(first) => {
            // A child module named without `self::` (in a `use` of a mod.rs), else an
            // outside crate.
            let mut child = here.clone();
            child.push(first.to_owned());
            if !modules.contains_key(&child) {
                return None;
            }
        }
        None => return None,
    }
    let mut target = here;
    let mut found = modules.get(&target).copied();
    for seg in rest {
        target.push(seg.clone());
        match modules.get(&target) {
            Some(&i) => found = Some(i),
            None => break,
        }
    }
    found
}

/// Functions of more than [`MAX_FN_LINES`] lines, as `(name, lines)`.
fn long_functions(src: &Source) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let lines = &src.lines;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let mut words = t.split_whitespace();
        let mut name = None;
        for w in words.by_ref() {
            match w {
                "pub" | "const" | "async" | "unsafe" | "extern" | "\"C\"" => {}
                _ if w.starts_with("pub(") => {}
                "fn" => {
                    name = words
                        .next()
                        .map(|n| n.split(['(', '<']).next().unwrap_or(n));
                    break;
                }
                _ => break,
            }
        }
        let Some(name) = name else { continue };
        // The signature ends with `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = strip_comment(&lines[j]).trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with("{}")
        }) else {
            continue;
        };
        let sig = strip_comment(&lines[open]).trim_end();
        if !sig.ends_with('{') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            let n = end - i + 1;
            if n > MAX_FN_LINES {
                out.push((name.to_owned(), n));
            }
        }
    }
    out
}

/// The cycles of the file graph, as lists of files.
fn cycles(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    // Tarjan's strongly connected components.
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort_unstable();
                s.out.push(comp);
            }
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Every break of a rule, as in [`KNOWN`].
fn breaks(srcs: &[Source]) -> BTreeSet<String> {
    let modules: BTreeMap<Vec<String>, usize> = srcs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.module.clone(), i))
        .collect();
    let mut found = BTreeSet::new();
    let mut edges = vec![BTreeSet::new(); srcs.len()];
    for (i, src) in srcs.iter().enumerate() {
        if src.lines.len() > MAX_FILE_LINES {
            found.insert(format!("file: {}", src.rel()));
        }
        for (name, _) in long_functions(src) {
            found.insert(format!("fn: {} {name}", src.rel()));
        }
        for path in named_paths(src) {
            if let Some(j) = resolve(src, &path, &modules)
                && j != i
            {
                edges[i].insert(j);
            }
        }
        let headless = src
            .module
            .first()
            .is_some_and(|m| HEADLESS.contains(&m.as_str()));
        let code = src
            .code()
            .iter()
            .map(|l| strip_comment(l))
            .collect::<Vec<_>>();
        if headless
            && code
                .iter()
                .any(|l| l.contains("egui") || l.contains("eframe"))
        {
            found.insert(format!("gui: {}", src.rel()));
        }
        let spawns = [
            "thread::spawn",
            "thread::Builder",
            "rayon::spawn",
            "thread::scope",
        ];
        if src.module.first().is_none_or(|m| m != "jobs")
            && code.iter().any(|l| spawns.iter().any(|s| l.contains(s)))
        {
            found.insert(format!("thread: {}", src.rel()));
        }
    }
    for cycle in cycles(&edges) {
        let names: Vec<String> = cycle.iter().map(|&i| srcs[i].rel()).collect();
        found.insert(format!("cycle: {}", names.join(" <-> ")));
    }
    found
}

#[test]
fn the_layout_rules_hold() {
    let srcs = sources();
    assert!(srcs.len() > 40, "the sources were not found");
    let found = breaks(&srcs);
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let fixed: Vec<&String> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "rules broken (README, architecture): {new:#?}"
    );
    assert!(
        fixed.is_empty(),
        "take these off KNOWN, they hold now: {fixed:#?}"
    );
}

/// The checker itself, on made-up sources: it must see what it is meant to see.
#[test]
fn the_checker_sees_cycles_long_functions_and_gui_imports() {
    let src = |path: &str, module: &[&str], text: &str| Source {
        path: PathBuf::from(path),
        module: module.iter().map(|s| s.to_string()).collect(),
        lines: text.lines().map(str::to_owned).collect(),
    };
    let long_body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let srcs = vec![
        src("src/lib.rs", &[], "pub mod a;\npub mod b;\npub mod ml;\n"),
        src(
            "src/a.rs",
            &["a"],
            "use crate::b::{x, y::z};\nfn short() {\n}\n",
        ),
        src(
            "src/b.rs",
            &["b"],
            &format!("use super::a::f;\npub(super) fn long<T>() {{\n{long_body}}}\n"),
        ),
        src(
            "src/ml/mod.rs",
            &["ml"],
            "pub mod run;\npub use run::train;\n",
        ),
        src(
            "src/ml/run.rs",
            &["ml", "run"],
            "use crate::ml::Thing;\nfn f() { let _ = egui::Context::default(); }\n\
             #[cfg(test)]\nmod tests {\n    fn t() { std::thread::spawn(|| {}); }\n}\n",
        ),
    ];
    let found = breaks(&srcs);
    let expected: BTreeSet<String> = [
        "cycle: src/a.rs <-> src/b.rs",
        "cycle: src/ml/mod.rs <-> src/ml/run.rs",
        "fn: src/b.rs long",
        "gui: src/ml/run.rs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, expected);
    assert_eq!(
        expand("crate::a::{b, c::{d, e as f}}"),
        vec![
            vec!["crate", "a", "b"],
            vec!["crate", "a", "c", "d"],
            vec!["crate", "a", "c", "e"],
        ]
    );
}
