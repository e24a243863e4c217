//! The crate graph is the one `docs/architecture.md` draws: every
//! dependency between kiln's own crates must be listed there, and every
//! listed one must exist, so the picture and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The list under `<!-- crate-dependencies -->` in the architecture doc,
/// in its order.
fn documented_in_order() -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let (_, after) = doc
        .split_once("<!-- crate-dependencies -->")
        .expect("docs/architecture.md marks its dependency list with <!-- crate-dependencies -->");
    let block = after.split("```").nth(1).expect("a fenced block follows the marker");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, deps) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{line:?} is not `crate: dep, dep`"));
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

fn documented() -> Graph {
    documented_in_order().into_iter().collect()
}

/// Normal and build dependencies between the workspace's packages, as
/// cargo resolves them.
fn actual() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .filter_map(|d| d["name"].as_str())
                .filter(|name| ours.contains(name))
                .map(str::to_owned)
                .collect();
            (package["name"].as_str().unwrap_or_default().to_owned(), deps)
        })
        .collect()
}

#[test]
fn every_dependency_between_kilns_crates_is_the_one_the_architecture_doc_lists() {
    let documented = documented();
    let actual = actual();
    let mut problems = Vec::new();
    for (name, deps) in &actual {
        let Some(listed) = documented.get(name) else {
            problems.push(format!("{name} is a crate the doc does not list"));
            continue;
        };
        for dep in deps.difference(listed) {
            problems.push(format!("{name} depends on {dep}, which the doc does not allow"));
        }
        for dep in listed.difference(deps) {
            problems.push(format!("the doc says {name} depends on {dep}; it does not"));
        }
    }
    for name in documented.keys().filter(|n| !actual.contains_key(*n)) {
        problems.push(format!("the doc lists {name}, which is not a crate"));
    }
    assert!(
        problems.is_empty(),
        "docs/architecture.md and the crates disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_list_reads_as_layers_with_no_cycle() {
    // A crate comes after everything it depends on in the doc's list,
    // which is what makes the list a picture of layers.
    let order = documented_in_order();
    for (position, (name, deps)) in order.iter().enumerate() {
        for dep in deps {
            let at = order.iter().position(|(n, _)| n == dep);
            assert!(
                at.is_some_and(|at| at < position),
                "{name} depends on {dep}, which the list puts after it (or not at all)"
            );
        }
    }
}
