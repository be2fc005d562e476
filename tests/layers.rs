//! The module layering ARCHITECTURE.md draws, held by a test: no import cycles between the
//! top-level modules of `src/`, and the command-line tools (`cli`, `bench`, `e2e`, `client`)
//! sit above the library core, which imports none of them. Imports are read from the source
//! (`crate::<module>` outside comments), so a new dependency shows up here the day it is added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The tools' modules: they may use the core, the core never uses them.
const TOOLS: &[&str] = &["cli", "bench", "e2e", "client"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Each top-level module of `src/` and the other top-level modules it imports.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read src/") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            modules.insert(name, files);
        } else if name != "lib" && name != "main" && path.extension().is_some_and(|e| e == "rs") {
            modules.insert(name, vec![path]);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, files)| {
            let mut used = BTreeSet::new();
            for file in files {
                let text = std::fs::read_to_string(file).expect("read a source file");
                for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                    for (at, _) in line.match_indices("crate::") {
                        let rest = &line[at + "crate::".len()..];
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if names.contains(&name) && &name != module {
                            used.insert(name);
                        }
                    }
                }
            }
            (module.clone(), used)
        })
        .collect()
}

/// A cycle through `from`, if there is one: the path back to it.
fn cycle_from(
    from: &str,
    at: &str,
    imports: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in &imports[at] {
        if next == from {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(from, next, imports, path, seen) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let imports = imports();
    assert!(imports.len() > 10, "found only {:?}", imports.keys());
    for module in imports.keys() {
        let mut path = vec![module.clone()];
        if let Some(cycle) = cycle_from(module, module, &imports, &mut path, &mut BTreeSet::new()) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_core_imports_none_of_the_tools() {
    let imports = imports();
    for tool in TOOLS {
        assert!(imports.contains_key(*tool), "no module {tool} in src/");
    }
    for (module, used) in &imports {
        if TOOLS.contains(&module.as_str()) {
            continue;
        }
        let upward: Vec<&String> = used
            .iter()
            .filter(|u| TOOLS.contains(&u.as_str()))
            .collect();
        assert!(
            upward.is_empty(),
            "{module} (library core) imports the tools' {upward:?}"
        );
    }
    let into_cli: Vec<&String> = imports
        .iter()
        .filter(|(_, used)| used.contains("cli"))
        .map(|(module, _)| module)
        .collect();
    assert!(into_cli.is_empty(), "nothing may import cli: {into_cli:?}");
}
