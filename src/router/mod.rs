//! Traffic routers. Istio is the one fledge drives today: a VirtualService splitting the apex host between
//! the primary and canary Services, and a DestinationRule for each.

pub mod affinity;
pub mod istio;
