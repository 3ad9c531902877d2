//! `fledge policy componentize`: a core wasm module → a policy component. A module built with wit-bindgen
//! carries its component type; one from a toolchain without WIT bindings (Go) gets fledge's own contract
//! embedded for the world it names. A module that imports WASI preview 1 (Go's runtime does, whatever the
//! program uses) is linked with fledge's deny-all WASI, answered inside the component: the result imports
//! only what the host grants a policy.

use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::{Resolve, SourceMap};

/// The preview 1 module name a core module imports WASI from.
const PREVIEW1: &str = "wasi_snapshot_preview1";

/// The deny-all WASI (see the file's own comment).
const DENY_ALL_WASI: &str = include_str!("deny_all_wasi.wat");

/// Why a module could not become a component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentizeError {
    #[error("already a component")]
    AlreadyComponent,
    #[error("not a wasm module: {0}")]
    NotAModule(String),
    #[error("the module carries no component type (no wit-bindgen): name the world it serves with --world")]
    NoWorld,
    #[error(
        "{world:?} is not a world of fledge:policy (step-policy, gate-policy, analysis-policy, policy): {why}"
    )]
    UnknownWorld { world: String, why: String },
    #[error("cannot wrap the module: {0}")]
    Encode(String),
}

/// Wraps `module` into a component; `world` embeds fledge's current contract for that world first.
pub fn componentize(module: &[u8], world: Option<&str>) -> Result<Vec<u8>, ComponentizeError> {
    if crate::policy::is_component(module) {
        return Err(ComponentizeError::AlreadyComponent);
    }
    let facts = read(module)?;
    let mut module = module.to_vec();
    match world {
        Some(world) => embed_contract(&mut module, world)?,
        None if !facts.has_component_type => return Err(ComponentizeError::NoWorld),
        None => {}
    }
    let mut encoder = ComponentEncoder::default()
        .module(&module)
        .map_err(|e| ComponentizeError::Encode(format!("{e:#}")))?;
    if facts.imports_wasi {
        let wasi = wat::parse_str(DENY_ALL_WASI).expect("the deny-all WASI is valid text");
        encoder = encoder
            .adapter(PREVIEW1, &wasi)
            .map_err(|e| ComponentizeError::Encode(format!("{e:#}")))?;
    }
    encoder
        .validate(true)
        .encode()
        .map_err(|e| ComponentizeError::Encode(format!("{e:#}")))
}

struct Facts {
    has_component_type: bool,
    imports_wasi: bool,
}

fn read(module: &[u8]) -> Result<Facts, ComponentizeError> {
    let mut facts = Facts {
        has_component_type: false,
        imports_wasi: false,
    };
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload.map_err(|e| ComponentizeError::NotAModule(e.to_string()))? {
            wasmparser::Payload::CustomSection(section) if section.name().starts_with("component-type") => {
                facts.has_component_type = true;
            }
            wasmparser::Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(|e| ComponentizeError::NotAModule(e.to_string()))?;
                    facts.imports_wasi |= import.module == PREVIEW1;
                }
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// Embeds the component type of `world` of fledge's current contract (`wit/`, compiled into the binary).
fn embed_contract(module: &mut Vec<u8>, world: &str) -> Result<(), ComponentizeError> {
    let unknown = |why: String| ComponentizeError::UnknownWorld {
        world: world.to_owned(),
        why,
    };
    let mut resolve = Resolve::default();
    let mut sources = SourceMap::default();
    for (name, text) in super::templates::contract() {
        if name.ends_with(".wit") {
            sources.push_str(name, text);
        }
    }
    let group = sources
        .parse()
        .unwrap_or_else(|(_, e)| panic!("the contract compiled into fledge parses: {e}"));
    let package = resolve.push_group(group).expect("the contract resolves");
    let world = resolve
        .select_world(&[package], Some(world))
        .map_err(|e| unknown(format!("{e:#}")))?;
    embed_component_metadata(module, &resolve, world, StringEncoding::UTF8)
        .map_err(|e| unknown(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module that imports WASI and fledge's log, exports `step` by hand, and carries no component type.
    const BARE: &str = r#"(module
        (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
        (import "fledge:policy/log@0.2.0" "log" (func (param i32 i32 i32)))
        (memory (export "memory") 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "fledge:policy/step@0.2.0#next") (param i32) (result i32)
            (drop (call $random (i32.const 2048) (i32.const 8)))
            (i32.const 4096)))"#;

    /// The interfaces a component imports, as its own type says.
    fn imports(component: &[u8]) -> Vec<String> {
        let wit_parser::decoding::DecodedWasm::Component(resolve, world) =
            wit_component::decode(component).expect("decode")
        else {
            panic!("not a component")
        };
        resolve.worlds[world]
            .imports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect()
    }

    #[test]
    fn a_module_without_bindings_gets_the_contract_and_no_wasi_import() {
        let module = wat::parse_str(BARE).expect("wat");
        let component = componentize(&module, Some("step-policy")).expect("componentize");
        assert!(crate::policy::is_component(&component));
        let imports = imports(&component);
        assert!(
            imports.iter().all(|i| i.starts_with("fledge:policy/")),
            "only fledge's interfaces, WASI answered inside: {imports:?}"
        );
        assert!(
            imports.iter().any(|i| i == "fledge:policy/log@0.2.0"),
            "{imports:?}"
        );
    }

    #[test]
    fn a_module_without_bindings_needs_a_world_and_a_known_one() {
        let module = wat::parse_str(BARE).expect("wat");
        assert!(matches!(
            componentize(&module, None),
            Err(ComponentizeError::NoWorld)
        ));
        let err = componentize(&module, Some("everything")).expect_err("no such world");
        assert!(err.to_string().contains("\"everything\""), "{err}");
    }

    #[test]
    fn a_module_exporting_less_than_its_world_is_refused() {
        let module = wat::parse_str(BARE).expect("wat");
        let err = componentize(&module, Some("policy")).expect_err("gate and analysis missing");
        assert!(matches!(err, ComponentizeError::Encode(_)), "{err}");
    }

    #[test]
    fn a_component_is_not_wrapped_twice() {
        let module = wat::parse_str(BARE).expect("wat");
        let component = componentize(&module, Some("step-policy")).expect("componentize");
        assert!(matches!(
            componentize(&component, None),
            Err(ComponentizeError::AlreadyComponent)
        ));
    }
}
