//! Components compiled into the binary, addressed as `builtin:<name>`, and reading a policy reference.

use super::error::PolicyError;

/// The default policy: Flagger's Istio behaviour (20 % steps), built from `policies/default` by build.rs.
pub const BUILTIN_DEFAULT: &str = "builtin:default";

/// An anytime-valid sequential test of the canary's error rate against the primary's (mixture SPRT), built
/// from `policies/sequential`: rolls back as soon as the evidence says worse, promotes early when it says not.
pub const BUILTIN_SEQUENTIAL: &str = "builtin:sequential";

static DEFAULT_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fledge_policy_default.wasm"));
static SEQUENTIAL_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fledge_policy_sequential.wasm"));

/// Every built-in component, by reference.
pub const BUILTINS: &[(&str, &[u8])] = &[
    (BUILTIN_DEFAULT, DEFAULT_COMPONENT),
    (BUILTIN_SEQUENTIAL, SEQUENTIAL_COMPONENT),
];

/// The bytes of a built-in component, if `name` is one.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The built-ins' references, for messages (`builtin:default, builtin:sequential`).
pub fn builtin_names() -> String {
    BUILTINS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The bytes a policy reference names: `builtin:<name>` or a path to a `.wasm` component.
pub fn read_source(source: &str) -> Result<std::borrow::Cow<'static, [u8]>, PolicyError> {
    if source.starts_with("builtin:") {
        return builtin(source)
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| PolicyError::Load {
                source_name: source.to_owned(),
                message: format!("no such built-in policy (known: {})", builtin_names()),
            });
    }
    std::fs::read(source)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| PolicyError::Load {
            source_name: source.to_owned(),
            message: e.to_string(),
        })
}
