//! PURE: Flagger's session affinity on Istio. While the canary takes traffic, its responses set a cookie and
//! a route ahead of the weighted one sends every request carrying that cookie to the canary, so a user who
//! landed there stays; with `primaryCookieName`, the primary's responses set one of their own (for one
//! interval) and keep their users on the primary. Once the canary is back to 0 % (promoted or rolled back),
//! a route matching the last rollout's cookie expires it (`Max-Age=-1`) on the clients that still send it.
//!
//! The cookies live in the Canary's status (Flagger's three fields). A value is derived from the rollout it
//! belongs to (Canary uid, revision, start) rather than drawn at random, so the decision stays a pure function
//! and a restarted controller writes the same routes.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::SessionAffinity;

/// Flagger's default cookie lifetime: a day.
const DEFAULT_MAX_AGE: i64 = 86_400;

/// The cookies of a Canary as its status keeps them: `<name>=<value>` each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cookies {
    pub canary: Option<String>,
    pub primary: Option<String>,
    pub previous: Option<String>,
}

/// What the VirtualService needs to keep users where they landed.
#[derive(Debug, Clone, Copy)]
pub struct Sticky<'a> {
    pub settings: &'a SessionAffinity,
    pub cookies: &'a Cookies,
    /// The analysis interval: how long the primary's cookie lives.
    pub interval_secs: u64,
}

/// The cookies after routing `canary_weight` % to the canary: a rollout taking traffic gets its cookies (kept
/// once made); at 0 % the rollout's cookie becomes the previous one, to be expired. `seed` names the rollout.
pub fn next_cookies(settings: &SessionAffinity, old: &Cookies, canary_weight: u32, seed: &str) -> Cookies {
    if canary_weight == 0 {
        return Cookies {
            canary: None,
            primary: old.primary.clone(),
            previous: old.canary.clone().or_else(|| old.previous.clone()),
        };
    }
    let primary = settings
        .primary_cookie_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|name| {
            old.primary
                .clone()
                .unwrap_or_else(|| format!("{name}={}", value(seed, "primary")))
        });
    Cookies {
        canary: Some(
            old.canary
                .clone()
                .unwrap_or_else(|| format!("{}={}", settings.cookie_name, value(seed, "canary"))),
        ),
        primary,
        previous: old.previous.clone(),
    }
}

/// Ten letters, as Flagger's cookie values, from the rollout and the cookie's role.
fn value(seed: &str, role: &str) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let digest = Sha256::digest(format!("{role}\n{seed}").as_bytes());
    digest
        .iter()
        .take(10)
        .map(|b| char::from(LETTERS[usize::from(*b) % LETTERS.len()]))
        .collect()
}

/// The `Set-Cookie` value for `cookie` living `max_age` seconds, with the Canary's attributes.
fn set_cookie(settings: &SessionAffinity, cookie: &str, max_age: i64) -> String {
    let mut out = format!("{cookie}; Max-Age={max_age}");
    if let Some(domain) = settings.domain.as_deref().filter(|d| !d.is_empty()) {
        out.push_str(&format!("; Domain={domain}"));
    }
    if settings.http_only {
        out.push_str("; HttpOnly");
    }
    if settings.partitioned {
        out.push_str("; Partitioned");
    }
    if let Some(path) = settings.path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!("; Path={path}"));
    }
    if let Some(same_site) = settings.same_site.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!("; SameSite={same_site}"));
    }
    if settings.secure {
        out.push_str("; Secure");
    }
    out
}

/// A match on the request's `Cookie` header carrying `cookie` (Flagger's regex), laid over each of the
/// Service's own match conditions as an A/B condition is.
fn cookie_match(cookie: &str, service_match: &[Value]) -> Value {
    let (name, value) = cookie.split_once('=').unwrap_or((cookie, ""));
    let condition = json!({"headers": {"Cookie": {"regex": format!(".*{name}.*{value}.*")}}});
    Value::Array(super::lay_over(&[condition], service_match))
}

/// `weighted` (the route carrying the split, its destinations `[primary, canary]`) with the sticky routes in
/// front of it, as Flagger orders them: canary cookie, primary cookie, weighted.
pub fn routes(sticky: Sticky<'_>, mut weighted: Value, service_match: &[Value]) -> Vec<Value> {
    let Sticky {
        settings,
        cookies,
        interval_secs,
    } = sticky;
    // The mirror, while an analysis mirrors, stays on the weighted route: it copies requests whatever their
    // cookie (Flagger puts it on the first route, which would copy only the cookie's).
    let beside = |weighted: &Value| {
        let mut route = weighted.clone();
        if let Some(r) = route.as_object_mut() {
            r.remove("mirror");
            r.remove("mirrorPercentage");
        }
        route
    };
    let pinned = |weighted: &Value, cookie: &str, to_canary: bool| {
        let mut route = beside(weighted);
        route["match"] = cookie_match(cookie, service_match);
        route["route"][0]["weight"] = json!(if to_canary { 0 } else { 100 });
        route["route"][1]["weight"] = json!(if to_canary { 100 } else { 0 });
        for destination in route["route"].as_array_mut().into_iter().flatten() {
            if let Some(d) = destination.as_object_mut() {
                d.remove("headers");
            }
        }
        route
    };
    let Some(canary_cookie) = &cookies.canary else {
        // At 0 %: expire the last rollout's cookie on the clients that still send it.
        let Some(previous) = &cookies.previous else {
            return vec![weighted];
        };
        let mut expire = beside(&weighted);
        expire["match"] = cookie_match(previous, service_match);
        expire["headers"]["response"]["add"]["Set-Cookie"] = json!(format!("{previous}; Max-Age=-1"));
        return vec![expire, weighted];
    };
    let max_age = settings.max_age.filter(|a| *a != 0).unwrap_or(DEFAULT_MAX_AGE);
    weighted["route"][1]["headers"] =
        json!({"response": {"add": {"Set-Cookie": set_cookie(settings, canary_cookie, max_age)}}});
    let mut out = Vec::with_capacity(3);
    out.push(pinned(&weighted, canary_cookie, true));
    if let Some(primary_cookie) = &cookies.primary {
        let age = i64::try_from(interval_secs).unwrap_or(i64::MAX);
        weighted["route"][0]["headers"] =
            json!({"response": {"add": {"Set-Cookie": set_cookie(settings, primary_cookie, age)}}});
        out.push(pinned(&weighted, primary_cookie, false));
    }
    out.push(weighted);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(primary: Option<&str>) -> SessionAffinity {
        SessionAffinity {
            cookie_name: "canary-cookie".into(),
            max_age: Some(21_600),
            primary_cookie_name: primary.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_taking_traffic_gets_one_cookie_that_becomes_the_previous_one_at_zero() {
        let s = settings(None);
        let first = next_cookies(&s, &Cookies::default(), 10, "uid/r2/start");
        let canary = first
            .canary
            .clone()
            .expect("a cookie while the canary takes traffic");
        assert!(canary.starts_with("canary-cookie=") && canary.len() == "canary-cookie=".len() + 10);
        assert_eq!(
            next_cookies(&s, &first, 40, "other seed"),
            first,
            "kept once made"
        );
        let done = next_cookies(&s, &first, 0, "uid/r2/start");
        assert_eq!((done.canary, done.previous), (None, Some(canary.clone())));
        let next = next_cookies(&s, &next_cookies(&s, &first, 0, ""), 20, "uid/r3/start");
        assert_ne!(next.canary, Some(canary), "a new rollout, a new cookie");
    }

    #[test]
    fn the_canary_cookie_pins_requests_to_the_canary_ahead_of_the_weighted_route() {
        let s = settings(Some("primary-cookie"));
        let cookies = Cookies {
            canary: Some("canary-cookie=abc".into()),
            primary: Some("primary-cookie=xyz".into()),
            previous: None,
        };
        let weighted = json!({"route": [
            {"destination": {"host": "podinfo-primary"}, "weight": 60},
            {"destination": {"host": "podinfo-canary"}, "weight": 40}]});
        let sticky = Sticky {
            settings: &s,
            cookies: &cookies,
            interval_secs: 60,
        };
        let routes = routes(sticky, weighted, &[json!({"uri": {"prefix": "/api"}})]);
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[0]["match"],
            json!([{"uri": {"prefix": "/api"}, "headers": {"Cookie": {"regex": ".*canary-cookie.*abc.*"}}}])
        );
        assert_eq!(
            (
                routes[0]["route"][0]["weight"].as_u64(),
                routes[0]["route"][1]["weight"].as_u64()
            ),
            (Some(0), Some(100))
        );
        assert_eq!(
            (
                routes[1]["route"][0]["weight"].as_u64(),
                routes[1]["route"][1]["weight"].as_u64()
            ),
            (Some(100), Some(0))
        );
        assert_eq!(
            routes[2]["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
            "canary-cookie=abc; Max-Age=21600"
        );
        assert_eq!(
            routes[2]["route"][0]["headers"]["response"]["add"]["Set-Cookie"],
            "primary-cookie=xyz; Max-Age=60"
        );
        assert!(routes[0]["route"][1].get("headers").is_none());
    }

    #[test]
    fn at_zero_the_previous_cookie_is_expired_and_without_one_the_route_is_alone() {
        let s = settings(None);
        let weighted = json!({"route": [
            {"destination": {"host": "podinfo-primary"}, "weight": 100},
            {"destination": {"host": "podinfo-canary"}, "weight": 0}]});
        let none = Cookies::default();
        let sticky = |cookies| Sticky {
            settings: &s,
            cookies,
            interval_secs: 60,
        };
        assert_eq!(
            routes(sticky(&none), weighted.clone(), &[]),
            vec![weighted.clone()]
        );
        let old = Cookies {
            previous: Some("canary-cookie=abc".into()),
            ..Cookies::default()
        };
        let routes = routes(sticky(&old), weighted.clone(), &[]);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[0]["headers"]["response"]["add"]["Set-Cookie"],
            "canary-cookie=abc; Max-Age=-1"
        );
        assert_eq!(routes[1], weighted);
    }

    #[test]
    fn the_cookie_carries_the_attributes_the_canary_asks_for() {
        let s = SessionAffinity {
            cookie_name: "c".into(),
            domain: Some("example.com".into()),
            path: Some("/".into()),
            same_site: Some("Lax".into()),
            http_only: true,
            secure: true,
            partitioned: true,
            ..Default::default()
        };
        assert_eq!(
            set_cookie(&s, "c=v", 10),
            "c=v; Max-Age=10; Domain=example.com; HttpOnly; Partitioned; Path=/; SameSite=Lax; Secure"
        );
    }
}
