//! `fledge policy new --lang <lang> <dir>`: writes a policy template out of the binary — the same files
//! `make test` builds from `examples/policies/<lang>/` and runs through their scenario — plus the current
//! contract in `wit/`, so a new author starts from something that passes.

use std::path::{Path, PathBuf};

/// A template's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Javascript,
    Go,
}

/// (path inside the new directory, contents).
type Files = &'static [(&'static str, &'static str)];

/// The contract every template builds against (`wit/`, without the frozen older versions).
const CONTRACT: Files = &[
    ("wit/types.wit", include_str!("../../wit/types.wit")),
    ("wit/host.wit", include_str!("../../wit/host.wit")),
    ("wit/worlds.wit", include_str!("../../wit/worlds.wit")),
    ("wit/README.md", include_str!("../../wit/README.md")),
];

const RUST: Files = &[
    (
        "Cargo.toml",
        include_str!("../../examples/policies/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../examples/policies/rust/src/lib.rs"),
    ),
    (
        "src/rule.rs",
        include_str!("../../examples/policies/rust/src/rule.rs"),
    ),
    (
        "scenario.yaml",
        include_str!("../../examples/policies/rust/scenario.yaml"),
    ),
    (
        "README.md",
        include_str!("../../examples/policies/rust/README.md"),
    ),
];

const PYTHON: Files = &[
    ("app.py", include_str!("../../examples/policies/python/app.py")),
    (
        "scenario.yaml",
        include_str!("../../examples/policies/python/scenario.yaml"),
    ),
    (
        "README.md",
        include_str!("../../examples/policies/python/README.md"),
    ),
];

const JAVASCRIPT: Files = &[
    (
        "step.js",
        include_str!("../../examples/policies/javascript/step.js"),
    ),
    (
        "package.json",
        include_str!("../../examples/policies/javascript/package.json"),
    ),
    (
        "scenario.yaml",
        include_str!("../../examples/policies/javascript/scenario.yaml"),
    ),
    (
        "README.md",
        include_str!("../../examples/policies/javascript/README.md"),
    ),
];

const GO: Files = &[
    ("go.mod", include_str!("../../examples/policies/go/go.mod")),
    ("rule.go", include_str!("../../examples/policies/go/rule.go")),
    (
        "rule_test.go",
        include_str!("../../examples/policies/go/rule_test.go"),
    ),
    ("types.go", include_str!("../../examples/policies/go/types.go")),
    ("abi.go", include_str!("../../examples/policies/go/abi.go")),
    (
        "log_native.go",
        include_str!("../../examples/policies/go/log_native.go"),
    ),
    (
        "scenario.yaml",
        include_str!("../../examples/policies/go/scenario.yaml"),
    ),
    ("README.md", include_str!("../../examples/policies/go/README.md")),
];

/// The current contract's files (`wit/`), as a template carries them.
pub fn contract() -> impl Iterator<Item = (&'static str, &'static str)> {
    CONTRACT.iter().copied()
}

/// The files of `lang`'s template, the contract included.
pub fn files(lang: Lang) -> impl Iterator<Item = (&'static str, &'static str)> {
    let own = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Javascript => JAVASCRIPT,
        Lang::Go => GO,
    };
    own.iter().chain(CONTRACT).copied()
}

/// Why a template could not be written.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("{0} exists and is not empty: choose a new directory")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes `lang`'s template into `dir` (created; it must not hold anything yet). Returns the paths written.
pub fn write(lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, NewError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NewError::Write { path, source }
    };
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(NewError::NotEmpty(dir.to_owned()));
    }
    let mut written = Vec::new();
    for (name, text) in files(lang) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_carries_its_source_its_scenario_its_readme_and_the_contract() {
        for lang in [Lang::Rust, Lang::Python, Lang::Javascript, Lang::Go] {
            let names: Vec<_> = files(lang).map(|(n, _)| n).collect();
            for needed in [
                "scenario.yaml",
                "README.md",
                "wit/types.wit",
                "wit/worlds.wit",
                "wit/host.wit",
            ] {
                assert!(names.contains(&needed), "{lang:?} lacks {needed}");
            }
        }
    }

    #[test]
    fn the_templates_share_one_scenario() {
        let scenario = |lang| files(lang).find(|(n, _)| *n == "scenario.yaml").map(|(_, t)| t);
        assert_eq!(scenario(Lang::Rust), scenario(Lang::Python));
        assert_eq!(scenario(Lang::Rust), scenario(Lang::Javascript));
        assert_eq!(scenario(Lang::Rust), scenario(Lang::Go));
    }

    #[test]
    fn a_template_is_not_written_over_existing_files() {
        let dir = std::env::temp_dir().join(format!("fledge-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("mine.txt"), "keep").expect("file");
        assert!(matches!(write(Lang::Rust, &dir), Err(NewError::NotEmpty(_))));
        assert_eq!(
            std::fs::read_to_string(dir.join("mine.txt")).ok().as_deref(),
            Some("keep")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
