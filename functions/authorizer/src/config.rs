//! The authorizer's configuration, from its variables.

use keyward::domain::{EnvName, KeyPrefix};

use crate::RouteScopes;

/// `KEYWARD_ENVIRONMENT`'s value for "a valid key of any environment".
pub const ANY_ENVIRONMENT: &str = "*";

/// The authorizer's configuration, read once at cold start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The only environment whose keys it accepts; `None` (`KEYWARD_ENVIRONMENT=*`) accepts
    /// a valid key of any environment, for an API that checks the environment itself, such
    /// as keyward's own management API.
    pub environment: Option<EnvName>,
    /// The scope each route needs.
    pub routes: RouteScopes,
    /// Whether a route that no pattern lists is open to any valid key; by default it is
    /// denied, so that a route added to an API without a scope is closed, not open.
    pub allow_unlisted: bool,
    /// The deployment's key prefix (`KEYWARD_KEY_PREFIX`): a key with any other is malformed.
    pub key_prefix: KeyPrefix,
}

impl Config {
    /// The variable that names the accepted environment.
    pub const ENVIRONMENT_VAR: &'static str = "KEYWARD_ENVIRONMENT";
    /// The variable that maps routes to scopes.
    pub const ROUTE_SCOPES_VAR: &'static str = "KEYWARD_ROUTE_SCOPES";
    /// The variable that says what an unlisted route gets: `deny` (the default) or `allow`.
    pub const UNLISTED_ROUTES_VAR: &'static str = "KEYWARD_UNLISTED_ROUTES";

    /// Reads the authorizer's variables; a bad value stops the cold start.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `var`, which gives a variable's value if it is set.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let environment = var(Self::ENVIRONMENT_VAR)
            .ok_or_else(|| format!("{} is not set", Self::ENVIRONMENT_VAR))?;
        let environment = match environment.as_str() {
            ANY_ENVIRONMENT => None,
            name => Some(
                EnvName::parse(name)
                    .map_err(|e| format!("KEYWARD_ENVIRONMENT {name:?}: {e}, or *"))?,
            ),
        };
        let routes = match var(Self::ROUTE_SCOPES_VAR) {
            Some(json) => RouteScopes::parse(&json)?,
            None => RouteScopes::default(),
        };
        let allow_unlisted = match var(Self::UNLISTED_ROUTES_VAR).as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(_) => {
                return Err(format!(
                    "{} is deny (the default) or allow",
                    Self::UNLISTED_ROUTES_VAR
                ));
            }
        };
        Ok(Self {
            environment,
            routes,
            allow_unlisted,
            key_prefix: keyward::key_prefix(var(keyward::KEY_PREFIX_VAR).as_deref())?,
        })
    }
}

impl Config {
    /// The people this authorizer takes: only the authorizer of every environment (keyward's
    /// own API's) may; one of a single environment, which other teams attach and whose
    /// context names a key, refuses to start when an issuer is set for it.
    pub fn people(&self) -> Result<Box<dyn keyward::http::People>, String> {
        let issuer = std::env::var(keyward::http::ISSUER_VAR).ok();
        self.may_take_people(issuer.as_deref())?;
        keyward::http::people_from_env()
    }

    /// An error when an `issuer` is set for an authorizer of one environment.
    fn may_take_people(&self, issuer: Option<&str>) -> Result<(), String> {
        match (&self.environment, issuer.map(str::trim)) {
            (Some(environment), Some(issuer)) if !issuer.is_empty() => Err(format!(
                "{} is set, but an authorizer of one environment ({environment}) takes keys only; people's tokens are for keyward's own API authorizer ({}=*)",
                keyward::http::ISSUER_VAR,
                Self::ENVIRONMENT_VAR
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_routes_are_denied_unless_allow_is_said() {
        let with = |unlisted: Option<&str>| {
            Config::from_vars(|name| match name {
                Config::ENVIRONMENT_VAR => Some("production".to_owned()),
                Config::UNLISTED_ROUTES_VAR => unlisted.map(str::to_owned),
                _ => None,
            })
        };
        assert!(!with(None).unwrap().allow_unlisted, "closed when unsaid");
        assert!(!with(Some("deny")).unwrap().allow_unlisted);
        assert!(with(Some("allow")).unwrap().allow_unlisted);
        for bad in ["Allow", "yes", "", "true"] {
            assert!(with(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_prefix_is_the_deployments_and_a_bad_one_stops_the_start() {
        let with = |prefix: Option<&str>| {
            Config::from_vars(|name| match name {
                Config::ENVIRONMENT_VAR => Some("production".to_owned()),
                keyward::KEY_PREFIX_VAR => prefix.map(str::to_owned),
                _ => None,
            })
        };
        assert_eq!(with(None).unwrap().key_prefix.as_str(), "kw");
        assert_eq!(with(Some("acme")).unwrap().key_prefix.as_str(), "acme");
        let refused = with(Some("Acme_")).unwrap_err();
        assert!(refused.starts_with("KEYWARD_KEY_PREFIX: "), "{refused}");
    }

    #[test]
    fn only_the_authorizer_of_every_environment_takes_people() {
        let of = |environment: &str| {
            Config::from_vars(|name| {
                (name == Config::ENVIRONMENT_VAR).then(|| environment.to_owned())
            })
            .unwrap()
        };
        let refused = of("production")
            .may_take_people(Some("https://id.example.com"))
            .unwrap_err();
        assert!(
            refused.starts_with("KEYWARD_OIDC_ISSUER is set"),
            "{refused}"
        );
        assert!(of("production").may_take_people(Some("")).is_ok());
        assert!(of("production").may_take_people(None).is_ok());
        assert!(
            of(ANY_ENVIRONMENT)
                .may_take_people(Some("https://id.example.com"))
                .is_ok()
        );
    }
}
