//! Components compiled into the binary, addressed as `builtin:<name>`, and reading a policy reference.

use super::error::PolicyError;

/// The default policy: Flagger's Istio behaviour (20 % steps), built from `policies/default` by build.rs.
pub const BUILTIN_DEFAULT: &str = "builtin:default";

static DEFAULT_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fledge_policy_default.wasm"));

/// The bytes of a built-in component, if `name` is one.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    match name {
        BUILTIN_DEFAULT => Some(DEFAULT_COMPONENT),
        _ => None,
    }
}

/// The bytes a policy reference names: `builtin:<name>` or a path to a `.wasm` component.
pub fn read_source(source: &str) -> Result<std::borrow::Cow<'static, [u8]>, PolicyError> {
    if source.starts_with("builtin:") {
        return builtin(source)
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| PolicyError::Load {
                source_name: source.to_owned(),
                message: format!("no such built-in policy (known: {BUILTIN_DEFAULT})"),
            });
    }
    std::fs::read(source)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| PolicyError::Load {
            source_name: source.to_owned(),
            message: e.to_string(),
        })
}
