//! People signed in through an identity provider: the roles its groups map to, and the
//! scopes those grant in each environment. A person is held to every rule a key is held to,
//! with the scopes their groups grant in the environment at hand.

use std::collections::BTreeMap;

use super::names::{EnvName, Scopes};

/// The environment name that stands for every environment in a role.
const ANY_ENVIRONMENT: &str = "*";

/// What a person may do: the scopes granted in every environment, and in named ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    everywhere: Scopes,
    by_environment: BTreeMap<EnvName, Scopes>,
}

impl Grants {
    /// The scopes held in `environment`: its own grants and every environment's.
    pub fn scopes_in(&self, environment: &EnvName) -> Scopes {
        match self.by_environment.get(environment) {
            Some(scopes) => self.everywhere.with(scopes),
            None => self.everywhere.clone(),
        }
    }

    /// Whether any environment's grants hold `scope`.
    pub fn grants_anywhere(&self, scope: &str) -> bool {
        self.everywhere.grants(scope) || self.by_environment.values().any(|s| s.grants(scope))
    }

    /// Whether nothing is granted anywhere: a person with no role.
    pub fn is_empty(&self) -> bool {
        self.everywhere.iter().next().is_none()
            && self
                .by_environment
                .values()
                .all(|s| s.iter().next().is_none())
    }

    /// The grants by environment, `*` for every environment's, each named one with every
    /// environment's added: what the console's environment switcher offers.
    pub fn listed(&self) -> BTreeMap<&str, Scopes> {
        std::iter::once((ANY_ENVIRONMENT, self.everywhere.clone()))
            .chain(
                self.by_environment
                    .keys()
                    .map(|env| (env.as_str(), self.scopes_in(env))),
            )
            .filter(|(_, scopes)| scopes.iter().next().is_some())
            .collect()
    }

    /// These grants and `other`'s: a person's rights are the union of their groups'.
    fn add(&mut self, other: &Grants) {
        self.everywhere = self.everywhere.with(&other.everywhere);
        for (environment, scopes) in &other.by_environment {
            let held = self.by_environment.entry(environment.clone()).or_default();
            *held = held.with(scopes);
        }
    }
}

/// Each group's grants: `{"group": {"environment or *": ["scope", ...]}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(BTreeMap<String, Grants>);

impl Roles {
    /// Reads the roles' JSON; the error names the group and the entry that is wrong.
    pub fn parse(json: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let groups = value
            .as_object()
            .ok_or("an object from each group to its grants")?;
        let mut roles = BTreeMap::new();
        for (group, grants) in groups {
            if group.is_empty() {
                return Err("a group name is empty".into());
            }
            let environments = grants.as_object().ok_or_else(|| {
                format!("group {group:?}: an object from each environment (or *) to its scopes")
            })?;
            let mut parsed = Grants::default();
            for (environment, scopes) in environments {
                let scopes: Vec<&str> = scopes
                    .as_array()
                    .and_then(|items| items.iter().map(|s| s.as_str()).collect())
                    .ok_or_else(|| {
                        format!("group {group:?}, environment {environment:?}: a list of scopes")
                    })?;
                let scopes = Scopes::parse(&scopes)
                    .map_err(|e| format!("group {group:?}, environment {environment:?}: {e}"))?;
                let granted = if environment == ANY_ENVIRONMENT {
                    Grants {
                        everywhere: scopes,
                        ..Grants::default()
                    }
                } else {
                    let name =
                        EnvName::parse(environment).map_err(|e| format!("group {group:?}: {e}"))?;
                    Grants {
                        by_environment: BTreeMap::from([(name, scopes)]),
                        ..Grants::default()
                    }
                };
                parsed.add(&granted);
            }
            roles.insert(group.clone(), parsed);
        }
        Ok(Self(roles))
    }

    /// The union of the grants of `groups`; a group with no role grants nothing.
    pub fn grants<S: AsRef<str>>(&self, groups: &[S]) -> Grants {
        let mut grants = Grants::default();
        for group in groups {
            if let Some(granted) = self.0.get(group.as_ref()) {
                grants.add(granted);
            }
        }
        grants
    }
}

/// A person, as their identity provider's token names them, with what their groups grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The provider's subject: the one id that stays theirs.
    pub sub: String,
    /// The name shown beside their changes: the token's email, else its name.
    pub name: Option<String>,
    /// What their groups grant.
    pub grants: Grants,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::parse(name).unwrap()
    }

    fn names(scopes: &Scopes) -> Vec<&str> {
        scopes.iter().map(|s| s.as_str()).collect()
    }

    const ROLES: &str = r#"{
        "platform-admins": {"*": ["*"]},
        "payments-devs": {"staging": ["keys:read", "keys:write", "activity:read"]},
        "payments-readers": {"staging": ["keys:read"], "production": ["keys:read"]},
        "auditors": {"*": ["activity:read"]}
    }"#;

    #[test]
    fn a_persons_rights_are_the_union_of_their_groups_grants() {
        let roles = Roles::parse(ROLES).unwrap();
        let grants = roles.grants(&["payments-devs", "payments-readers", "auditors"]);
        assert_eq!(
            names(&grants.scopes_in(&env("staging"))),
            ["activity:read", "keys:read", "keys:write"]
        );
        assert_eq!(
            names(&grants.scopes_in(&env("production"))),
            ["activity:read", "keys:read"]
        );
        assert_eq!(names(&grants.scopes_in(&env("dev"))), ["activity:read"]);
        assert!(grants.grants_anywhere("keys:write"));
        let admin = roles.grants(&["platform-admins"]);
        assert!(admin.scopes_in(&env("anything")).is_all());
    }

    #[test]
    fn the_switcher_lists_every_environment_with_what_is_held_there() {
        let roles = Roles::parse(ROLES).unwrap();
        let devs = roles.grants(&["payments-devs", "auditors"]);
        let listed = devs.listed();
        let shown: Vec<(&str, Vec<&str>)> =
            listed.iter().map(|(env, s)| (*env, names(s))).collect();
        assert_eq!(
            shown,
            [
                ("*", vec!["activity:read"]),
                ("staging", vec!["activity:read", "keys:read", "keys:write"]),
            ]
        );
        let readers = roles.grants(&["payments-readers"]);
        assert_eq!(
            readers.listed().keys().copied().collect::<Vec<_>>(),
            ["production", "staging"]
        );
        assert!(roles.grants(&["marketing"]).listed().is_empty());
    }

    #[test]
    fn groups_without_a_role_grant_nothing() {
        let roles = Roles::parse(ROLES).unwrap();
        let none = roles.grants(&["marketing", "payments-dev"]);
        assert!(none.is_empty());
        assert!(!none.grants_anywhere("keys:read"));
        assert!(roles.grants::<&str>(&[]).is_empty());
        let only_empty = Roles::parse(r#"{"g": {"staging": []}}"#).unwrap();
        assert!(only_empty.grants(&["g"]).is_empty());
    }

    #[test]
    fn roles_that_break_a_rule_are_refused_naming_where() {
        for (bad, says) in [
            ("[]", "an object from each group"),
            ("{", "not JSON"),
            (r#"{"": {"*": ["*"]}}"#, "empty"),
            (r#"{"g": ["*"]}"#, "group \"g\""),
            (r#"{"g": {"*": "*"}}"#, "a list of scopes"),
            (r#"{"g": {"*": [1]}}"#, "a list of scopes"),
            (r#"{"g": {"Prod!": ["*"]}}"#, "group \"g\""),
            (
                r#"{"g": {"staging": ["Keys Read"]}}"#,
                "environment \"staging\"",
            ),
        ] {
            let refused = Roles::parse(bad).unwrap_err();
            assert!(refused.contains(says), "{bad}: {refused}");
        }
    }
}
