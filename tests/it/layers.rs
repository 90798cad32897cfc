//! The layers hold: no module of `src/` imports another in a loop.
//!
//! The test reads every `src/**/*.rs` (the binary's `main.rs` aside), finds
//! each path into the crate (`crate::…`, `super::…`, `self::…` and a child
//! module named from its parent) and draws two kinds of graph from them: one
//! between the top-level modules (`cli`, `engine`, `model`, …) and, for each
//! folder, one between its files (the folder's own `mod.rs` or `name.rs`
//! taking part as `self`). A parent composes its children (declares,
//! re-exports and calls them): no edge. A child using its parent's items is
//! an edge to `self`, and to the sibling behind it when the parent only
//! re-exports the item (`pub use sibling::Item`). A loop in any graph fails
//! the test with the loop printed.
//!
//! The compiler does not hold these layers inside one package; this test
//! does, without a Cargo workspace (docs/DESIGN.md, "Layers").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges known to close a loop, each to be removed by the change that
/// breaks it: (folder, from, to).
const ALLOWED: &[(&str, &str, &str)] = &[];

/// A module path inside the crate: `["ops", "verify", "deep"]`.
type ModPath = Vec<String>;

#[test]
fn no_module_imports_another_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(&src, f)).collect();
    // folder → (from → {to}), "self" standing for the folder's own file.
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut why: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let read: Vec<(ModPath, String, Vec<Found>)> = files
        .iter()
        .map(|file| {
            let here = module_of(&src, file);
            let text = std::fs::read_to_string(file).unwrap();
            let found = crate_paths(&strip(&text), &here, &modules);
            (
                here,
                file.strip_prefix(&src).unwrap().display().to_string(),
                found,
            )
        })
        .collect();
    // `module::Item` → where `pub use` in that module takes it from.
    let mut reexports: BTreeMap<ModPath, ModPath> = BTreeMap::new();
    for (here, _, found) in &read {
        for f in found
            .iter()
            .filter(|f| f.reexport && f.path.last().is_some_and(|l| l != "*"))
        {
            let mut key = here.clone();
            key.push(f.path.last().unwrap().clone());
            if key != f.path {
                reexports.insert(key, f.path.clone());
            }
        }
    }
    for (here, name, found) in &read {
        if here.is_empty() {
            continue; // lib.rs only declares the modules
        }
        for found in found {
            let mut path = found.path.clone();
            for _ in 0..4 {
                match reexports.get(&path) {
                    Some(to) => path = to.clone(),
                    None => break,
                }
            }
            let Some(target) = owning_module(&path, &modules) else {
                continue;
            };
            let k = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if k == here.len() {
                continue; // itself, or a parent composing its children
            }
            let node = |m: &ModPath| m.get(k).cloned().unwrap_or_else(|| "self".into());
            let (folder, from, to) = (here[..k].join("/"), node(here), node(&target));
            why.entry((folder.clone(), from.clone(), to.clone()))
                .or_insert_with(|| format!("src/{name} uses crate::{}", path.join("::")));
            graphs
                .entry(folder)
                .or_default()
                .entry(from)
                .or_default()
                .insert(to);
        }
    }
    for (folder, from, to) in ALLOWED {
        let known = graphs.get_mut(*folder).and_then(|g| g.get_mut(*from));
        assert!(
            known.is_some_and(|tos| tos.remove(*to)),
            "{folder}: {from} → {to} is gone: remove it from ALLOWED"
        );
    }
    let mut loops = Vec::new();
    for (folder, graph) in &graphs {
        if let Some(cycle) = find_cycle(graph) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let key = (folder.clone(), w[0].clone(), w[1].clone());
                    format!("  {} → {}  ({})", w[0], w[1], why[&key])
                })
                .collect();
            let place = if folder.is_empty() {
                "top level"
            } else {
                folder
            };
            loops.push(format!("loop in {place}:\n{}", steps.join("\n")));
        }
    }
    assert!(
        loops.is_empty(),
        "modules import each other in a loop:\n{}",
        loops.join("\n")
    );
}

#[test]
fn the_base_layer_imports_nothing_of_the_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<ModPath> = rust_files(&src)
        .iter()
        .map(|f| module_of(&src, f))
        .collect();
    for file in rust_files(&src) {
        let here = module_of(&src, &file);
        let base = ["model", "error"];
        if !here.first().is_some_and(|top| base.contains(&top.as_str())) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for Found { path, .. } in crate_paths(&strip(&text), &here, &modules) {
            let top = path.first().map(String::as_str).unwrap_or("");
            assert!(
                base.contains(&top),
                "{} reaches crate::{}: the base layer may use only std, external crates and itself",
                file.display(),
                path.join("::")
            );
        }
    }
}

/// A file that uses `super::` resolves it from its own module, a test
/// module inside a file from the file's module.
#[test]
fn the_reader_resolves_paths_as_rust_does() {
    let modules: BTreeSet<ModPath> = [vec![], p("a"), p("a/b"), p("a/c"), p("d")]
        .into_iter()
        .collect();
    let text = strip(
        "use super::c::{X, y::{Z}};\n// use crate::d;\nconst S: &str = \"crate::d::Q\";\n\
         mod tests { use super::*; fn f() { crate::d::g(); c::h(); } }\n",
    );
    let found: Vec<ModPath> = crate_paths(&text, &p("a/b"), &modules)
        .into_iter()
        .map(|f| f.path)
        .collect();
    let want: Vec<ModPath> = vec![p("a/c/X"), p("a/c/y/Z"), p("a/b/*"), p("d/g")]
        .into_iter()
        .collect();
    assert_eq!(found, want);
    let text = strip("pub use b::G; fn f() { b::g(); crate::a::h(); }");
    let found = crate_paths(&text, &p("a"), &modules);
    let paths: Vec<ModPath> = found.iter().map(|f| f.path.clone()).collect();
    assert_eq!(paths, vec![p("a/b/G"), p("a/b/g"), p("a/h")]);
    assert_eq!(
        found.iter().map(|f| f.reexport).collect::<Vec<_>>(),
        [true, false, false]
    );
}

#[test]
fn a_loop_is_found_and_named_and_a_chain_is_not_a_loop() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    let chain = graph(&[("cli", "ops"), ("ops", "engine"), ("engine", "model")]);
    assert_eq!(find_cycle(&chain), None);
    let looped = graph(&[("cli", "ops"), ("ops", "engine"), ("engine", "ops")]);
    assert_eq!(
        find_cycle(&looped),
        Some(vec!["ops".into(), "engine".into(), "ops".into()])
    );
}

fn p(s: &str) -> ModPath {
    s.split('/')
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path != dir.join("main.rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `src/ops/verify/deep.rs` → `ops::verify::deep`; `mod.rs` and `lib.rs`
/// name their folder.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The longest prefix of `path` that is a module with a file of its own.
fn owning_module(path: &ModPath, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// The source with comments, strings and character literals blanked out,
/// so that only code is read.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let rest = |n: usize| c.get(i + n).copied();
        if c[i] == '/' && rest(1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && rest(1) == Some('*') {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if (c[i] == 'r' || (c[i] == 'b' && rest(1) == Some('r')))
            && !c
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && {
                let j = if c[i] == 'b' { i + 2 } else { i + 1 };
                let hashes = c[j..].iter().take_while(|x| **x == '#').count();
                c.get(j + hashes) == Some(&'"')
            }
        {
            let j = if c[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = c[j..].iter().take_while(|x| **x == '#').count();
            i = j + hashes + 1;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < c.len() && !c[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (rest(2) == Some('\'') || rest(1) == Some('\\')) {
            // A character literal ('{', '\n', '\u{7f}'), not a lifetime.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path, // ::
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            // `$crate` in a macro is the crate too, but no path of ours uses it.
            out.push(Token::Ident(c[start..i].iter().collect()));
            continue;
        }
        out.push(match ch {
            ':' if c.get(i + 1) == Some(&':') => {
                i += 1;
                Token::Path
            }
            '{' => Token::Open,
            '}' => Token::Close,
            ',' => Token::Comma,
            ';' => Token::Semi,
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            _ => Token::Other,
        });
        i += 1;
    }
    out
}

/// One path into the crate, and whether a `pub use` re-exports it.
#[derive(Debug)]
struct Found {
    path: ModPath,
    reexport: bool,
}

/// Every path into the crate the code names, made absolute, in order.
/// `here` is the file's module; inline `mod x { … }` blocks are followed so
/// that `super::` inside them resolves as the compiler does.
fn crate_paths(code: &str, here: &ModPath, modules: &BTreeSet<ModPath>) -> Vec<Found> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // The module the code at a point is in, and the brace depth each inline module opened at.
    let mut scope = here.clone();
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                    scope.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    scope.push(name.clone());
                    inline.push(depth);
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Token::Ident(kw) if kw == "use" => {
                let is_pub = |n: usize| i >= n && toks[i - n] == Token::Ident("pub".into());
                let reexport = is_pub(1) || (is_pub(4) && toks[i - 3] == Token::Other);
                let mut j = i + 1;
                let mut found = Vec::new();
                use_tree(&toks, &mut j, Vec::new(), &mut found);
                for path in found {
                    if let Some(path) = absolute(&path, &scope, modules) {
                        out.push(Found { path, reexport });
                    }
                }
                i = j;
                continue;
            }
            Token::Ident(first)
                if toks.get(i + 1) == Some(&Token::Path)
                    && (i == 0 || toks[i - 1] != Token::Path) =>
            {
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Token::Path) {
                    match toks.get(j + 1) {
                        Some(Token::Ident(s)) => path.push(s.clone()),
                        _ => break,
                    }
                    j += 2;
                }
                if let Some(path) = absolute(&path, &scope, modules) {
                    out.push(Found {
                        path,
                        reexport: false,
                    });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Read one use tree (`a::b::{c, d::{e}}`) from `toks[*j]` up to its `;`,
/// collecting every leaf path under `prefix`.
fn use_tree(toks: &[Token], j: &mut usize, prefix: Vec<String>, found: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match toks.get(*j) {
            Some(Token::Ident(s)) => {
                path.push(s.clone());
                *j += 1;
                if toks.get(*j) == Some(&Token::Ident("as".into())) {
                    *j += 2;
                }
            }
            Some(Token::Path) => *j += 1,
            Some(Token::Other) => {
                // `*`
                path.push("*".into());
                *j += 1;
            }
            Some(Token::Open) => {
                *j += 1;
                loop {
                    use_tree(toks, j, path.clone(), found);
                    match toks.get(*j) {
                        Some(Token::Comma) => *j += 1,
                        Some(Token::Close) => {
                            *j += 1;
                            break;
                        }
                        _ => return,
                    }
                    if toks.get(*j) == Some(&Token::Close) {
                        *j += 1;
                        break;
                    }
                }
                if toks.get(*j) == Some(&Token::Semi) {
                    *j += 1;
                }
                return;
            }
            Some(Token::Comma) | Some(Token::Close) => {
                found.push(path);
                return;
            }
            Some(Token::Semi) => {
                *j += 1;
                found.push(path);
                return;
            }
            None => return,
        }
    }
}

/// A path as written in module `scope`, made absolute from the crate root;
/// None when it leads outside the crate (std, an external crate, a local
/// item): a leading name counts only when it is a child module of `scope`.
fn absolute(path: &[String], scope: &ModPath, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => scope.clone(),
        "super" => scope[..scope.len().checked_sub(1)?].to_vec(),
        name => {
            let mut child = scope.clone();
            child.push(name.to_string());
            if !modules.contains(&child) {
                return None;
            }
            child
        }
    };
    let mut rest = rest;
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    if base.last().is_some_and(|s| s == "self") {
        base.pop(); // `use a::b::{self, …}` names `a::b`
    }
    Some(base)
}

/// One loop in `graph` as the list of its nodes, first node repeated last.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}
