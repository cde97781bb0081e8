//! The library's modules depend on each other one way only: every `crate::…` and `super::…` path
//! in `src/` is read, and a module may name only modules of lower layers (or its own). A new
//! import that points up — the store learning of grids, the report of sweeps, training of the
//! store — fails here, naming the file and the line.
use std::path::{Path, PathBuf};

/// The layers, bottom first; a module of one layer may use any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["files", "human"],
    &["data", "model"],
    &["device"],
    &["train"],
    &["trace", "sweep::store"],
    &["sweep"],
    &["report"],
    &["bench", "serve"],
];

fn layer_of(unit: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&unit))
        .unwrap_or_else(|| panic!("module {unit} has no layer in tests/it/layers.rs"))
}

/// The unit of a module path (`sweep::store::sqlite` → `sweep::store`, `report::plots` → `report`).
fn unit_of(module: &[String]) -> String {
    match module {
        [first, second, ..] if first == "sweep" && second == "store" => "sweep::store".into(),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The module path of a source file (`src/sweep/store/sqlite.rs` → `[sweep, store, sqlite]`).
fn module_of(file: &Path, src: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The module paths that `line` of module `module` names through `crate::` or `super::`.
fn named_modules(line: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut named = Vec::new();
    let idents = |rest: &str| -> Vec<String> {
        rest.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty())
            .collect()
    };
    for (at, _) in line.match_indices("crate::") {
        named.push(idents(&line[at + "crate::".len()..]));
    }
    let bytes = line.as_bytes();
    for (at, _) in line.match_indices("super::") {
        let preceded = at >= 2 && &line[at - 2..at] == "::";
        if preceded || (at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_'))
        {
            continue; // the middle of `super::super::` (counted from its first) or another name
        }
        let mut rest = &line[at..];
        let mut base = module.to_vec();
        // A file's `super` is its parent module; `mod.rs` is the module itself.
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        base.extend(idents(rest));
        named.push(base);
    }
    named
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The imports of the library's source that point from a lower layer to a higher one.
fn upward_imports(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in files {
        let module = module_of(&file, src);
        if module.len() == 1 && ["lib", "main", "cli", "commands"].contains(&module[0].as_str()) {
            continue; // the crate root and the binary sit on top
        }
        let from = unit_of(&module);
        let text = std::fs::read_to_string(&file).unwrap();
        // A file's own tests may use anything (they are not part of the library's layering).
        let library = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in library.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for named in named_modules(line, &module) {
                let to = unit_of(&named);
                if to.is_empty() || to == from {
                    continue;
                }
                if layer_of(&to) > layer_of(&from) {
                    upward.push(format!("{}:{}: {from} uses {to}", file.display(), n + 1));
                }
            }
        }
    }
    upward
}

#[test]
fn modules_use_only_modules_of_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let upward = upward_imports(&src);
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}

/// The check itself finds an import that points up, through `crate::` and through `super::`.
#[test]
fn an_upward_import_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    std::fs::create_dir_all(src.join("sweep/store")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod sweep;\n").unwrap();
    std::fs::write(
        src.join("sweep/store/mod.rs"),
        "use super::grid::RunSpec;\nuse crate::train::RunConfig;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("sweep/store/sqlite.rs"),
        "use super::super::coordinator;\n#[cfg(test)]\nmod tests { use crate::report; }\n",
    )
    .unwrap();
    std::fs::write(src.join("data.rs"), "// crate::report in a comment\n").unwrap();
    let upward = upward_imports(src);
    assert_eq!(upward.len(), 2, "{upward:?}");
    assert!(upward[0].ends_with("sweep/store/mod.rs:1: sweep::store uses sweep"));
    assert!(upward[1].ends_with("sweep/store/sqlite.rs:1: sweep::store uses sweep"));
}
