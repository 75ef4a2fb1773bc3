//! Which scope each route needs: `KEYWARD_ROUTE_SCOPES`' patterns, in one precedence order.

use keyward::domain::Scope;

/// One route pattern, such as `POST /orders/*`, and the scope it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteScope {
    /// The pattern as configured, to name it in errors.
    pattern: String,
    method: String,
    segments: Vec<String>,
    /// `None` when the route needs only a valid key (an empty scope in the configuration).
    scope: Option<Scope>,
}

impl RouteScope {
    /// The precedence rule: compared segment by segment from the left, a literal segment
    /// comes before `*` at the first position where two patterns differ; then a named
    /// method comes before `ANY`. The first matching pattern in this order decides.
    fn rank(&self) -> (Vec<bool>, bool) {
        let wild = self.segments.iter().map(|s| s == "*").collect();
        (wild, self.method == "ANY")
    }

    fn matches(&self, method: &str, path: &[&str]) -> bool {
        (self.method == "ANY" || self.method.eq_ignore_ascii_case(method))
            && self.segments.len() == path.len()
            && self
                .segments
                .iter()
                .zip(path)
                .all(|(w, g)| w == "*" || w == g)
    }

    /// Whether some request could match both patterns.
    fn overlaps(&self, other: &RouteScope) -> bool {
        let methods = self.method == "ANY" || other.method == "ANY" || self.method == other.method;
        methods
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a == "*" || b == "*" || a == b)
    }
}

/// The scope a request's route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// A listed route that needs this scope.
    Scope(&'a Scope),
    /// A listed route that needs only a valid key.
    AnyValidKey,
    /// A route that no pattern lists.
    Unlisted,
}

/// Which scope each route needs, from `KEYWARD_ROUTE_SCOPES`, in precedence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteScopes(Vec<RouteScope>);

/// A JSON object's members in their order, duplicates kept, so that none is silently lost.
struct Members(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, String>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl RouteScopes {
    /// Parses `{"GET /orders": "orders:read", "POST /orders/*": "orders:write", "GET /health": ""}`:
    /// a method (or `ANY`), a path whose `*` segments match any one segment, and a scope, or
    /// `""` for a route that needs only a valid key. Two patterns that could match the same
    /// request with equal precedence are refused, naming both.
    pub fn parse(json: &str) -> Result<Self, String> {
        let Members(members) = serde_json::from_str(json)
            .map_err(|e| format!("KEYWARD_ROUTE_SCOPES is not a JSON object of strings: {e}"))?;
        let mut routes: Vec<RouteScope> = Vec::with_capacity(members.len());
        for (route, scope) in members {
            let (method, path) = route
                .split_once(' ')
                .filter(|(m, p)| !m.is_empty() && p.starts_with('/'))
                .ok_or_else(|| {
                    format!("KEYWARD_ROUTE_SCOPES: {route:?} is not \"METHOD /path\"")
                })?;
            let scope = match scope.as_str() {
                "" => None,
                scope => Some(
                    Scope::parse(scope, 0)
                        .map_err(|e| format!("KEYWARD_ROUTE_SCOPES: {route:?}: {e}"))?,
                ),
            };
            let candidate = RouteScope {
                method: method.to_ascii_uppercase(),
                segments: segments(path).into_iter().map(str::to_owned).collect(),
                scope,
                pattern: route.clone(),
            };
            if let Some(twin) = routes
                .iter()
                .find(|r| r.rank() == candidate.rank() && r.overlaps(&candidate))
            {
                return Err(format!(
                    "KEYWARD_ROUTE_SCOPES: {:?} and {route:?} match the same requests with equal precedence; keep one",
                    twin.pattern
                ));
            }
            routes.push(candidate);
        }
        routes.sort_by_key(RouteScope::rank);
        Ok(Self(routes))
    }

    /// What the route of `method path` needs: the first listed pattern in precedence order
    /// that matches it decides.
    pub fn required(&self, method: &str, path: &str) -> Requirement<'_> {
        let path = segments(path);
        match self.0.iter().find(|r| r.matches(method, &path)) {
            Some(RouteScope {
                scope: Some(scope), ..
            }) => Requirement::Scope(scope),
            Some(_) => Requirement::AnyValidKey,
            None => Requirement::Unlisted,
        }
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns chosen so that every rule of the precedence order decides some request.
    const PATTERNS: [(&str, &str); 9] = [
        ("GET /orders", "orders:read"),
        ("POST /orders/*", "orders:write"),
        ("ANY /admin/*/x", "admin"),
        ("GET /orders/special", "special"),
        ("GET /a/*", "a"),
        ("GET /*/b", "b"),
        ("ANY /a/b", "any-a-b"),
        ("GET /*/*", "two"),
        ("GET /health", ""),
    ];

    fn requirement(routes: &RouteScopes, method: &str, path: &str) -> String {
        match routes.required(method, path) {
            Requirement::Scope(scope) => scope.as_str().to_owned(),
            Requirement::AnyValidKey => "any valid key".to_owned(),
            Requirement::Unlisted => "unlisted".to_owned(),
        }
    }

    #[test]
    fn one_precedence_rule_decides_whatever_order_the_patterns_come_in() {
        let expected = [
            ("GET", "/orders", "orders:read"),
            ("get", "/orders/", "orders:read"),
            ("POST", "/orders/42", "orders:write"),
            ("DELETE", "/admin/7/x", "admin"),
            ("GET", "/orders/special", "special"),
            ("GET", "/orders/42", "two"),
            ("GET", "/a/b", "any-a-b"),
            ("POST", "/a/b", "any-a-b"),
            ("GET", "/a/c", "a"),
            ("GET", "/c/b", "b"),
            ("GET", "/c/d", "two"),
            ("GET", "/health", "any valid key"),
            ("POST", "/a/c", "unlisted"),
            ("POST", "/orders/42/items", "unlisted"),
            ("GET", "/", "unlisted"),
        ];
        let mut order: Vec<usize> = (0..PATTERNS.len()).collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..500 {
            for i in (1..order.len()).rev() {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                order.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let members: Vec<String> = order
                .iter()
                .map(|&i| format!("{:?}: {:?}", PATTERNS[i].0, PATTERNS[i].1))
                .collect();
            let json = format!("{{{}}}", members.join(", "));
            let routes = RouteScopes::parse(&json).unwrap();
            for (method, path, scope) in expected {
                assert_eq!(
                    requirement(&routes, method, path),
                    scope,
                    "{method} {path} with {json}"
                );
            }
        }
    }

    #[test]
    fn patterns_that_match_the_same_requests_with_equal_precedence_are_refused() {
        for (json, first, second) in [
            (r#"{"GET /a": "x", "get /a/": "y"}"#, "GET /a", "get /a/"),
            (r#"{"GET /a": "x", "GET /a": "x"}"#, "GET /a", "GET /a"),
            (
                r#"{"ANY /a/*": "x", "ANY //a/*": "y"}"#,
                "ANY /a/*",
                "ANY //a/*",
            ),
        ] {
            let err = RouteScopes::parse(json).unwrap_err();
            assert!(
                err.contains(&format!("{first:?}")) && err.contains(&format!("{second:?}")),
                "{json}: {err}"
            );
        }
        for distinct in [
            r#"{"GET /a/*": "x", "POST /a/*": "y"}"#,
            r#"{"GET /a/*": "x", "GET /b/*": "y"}"#,
            r#"{"GET /a/*": "x", "ANY /a/*": "y"}"#,
            r#"{"GET /a/*": "x", "GET /*/b": "y"}"#,
        ] {
            assert!(RouteScopes::parse(distinct).is_ok(), "{distinct}");
        }
        for bad in [
            "[]",
            "{\"GET\": \"a\"}",
            "{\"GET orders\": \"a\"}",
            "{\"GET /a\": \"Not A Scope\"}",
            "{\"GET /a\": 5}",
        ] {
            assert!(RouteScopes::parse(bad).is_err(), "{bad}");
        }
    }
}
