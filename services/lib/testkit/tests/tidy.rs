//! House rules checked as ordinary tests, so they cannot rot: every Rust file opens with a
//! `//!` line saying what it owns, no trailing whitespace or tabs, every `.proto` opens with a
//! comment, and every dependency of the workspace is explained in docs/dependencies.md.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .canonicalize()
        .unwrap()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn project_files() -> Vec<PathBuf> {
    let root = root();
    let mut out = Vec::new();
    files(&root, &mut out);
    let ci = root.join(".ci");
    if ci.is_dir() {
        files(&ci, &mut out);
    }
    out
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .is_some_and(|e| exts.contains(&e.to_string_lossy().as_ref()))
}

#[test]
fn every_rust_file_says_what_it_owns() {
    let mut missing = Vec::new();
    for path in project_files().into_iter().filter(|p| has_ext(p, &["rs"])) {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(path.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! comment: {missing:#?}"
    );
}

#[test]
fn every_proto_file_opens_with_a_comment() {
    for path in project_files().into_iter().filter(|p| has_ext(p, &["proto"])) {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("//"),
            "{} should open with a comment",
            path.display()
        );
    }
}

#[test]
fn no_trailing_whitespace_or_tabs() {
    let mut bad = Vec::new();
    for path in project_files() {
        let is_text = has_ext(&path, &["rs", "toml", "md", "proto", "yml", "yaml", "sh"])
            || path.file_name().is_some_and(|n| n == "Justfile" || n == "run");
        if !is_text {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let tab_ok = path.file_name().is_some_and(|n| n == "Justfile");
            if line.ends_with(' ') || line.ends_with('\t') || (!tab_ok && line.contains('\t')) {
                bad.push(format!(
                    "{}:{}",
                    path.strip_prefix(root()).unwrap().display(),
                    i + 1
                ));
            }
        }
    }
    assert!(bad.is_empty(), "trailing whitespace or tabs at: {bad:#?}");
}

#[test]
fn every_dependency_is_explained() {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/dependencies.md")).unwrap();
    let table = manifest
        .split("[workspace.dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let mut unexplained = Vec::new();
    for line in table.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['=', ' ']).next().unwrap().trim();
        if name.starts_with("shop-") {
            continue;
        }
        if !doc.contains(&format!("`{name}`")) {
            unexplained.push(name.to_owned());
        }
    }
    assert!(
        unexplained.is_empty(),
        "add these to docs/dependencies.md: {unexplained:?}"
    );
}
