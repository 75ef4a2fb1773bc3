//! The networks a key may be used from: its `allowed_ips`, parsed once into ranges that a
//! check matches an address against without allocating.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::names::InputError;

/// One allowed network: an address with its host bits clear, and how many leading bits of it
/// an address must share. A single address is the network of its full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Reads `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or an IPv6 address with `/n`. An
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, with at least 96 bits of prefix) is read as
    /// its IPv4 form, so that it matches as the same client. A range with host bits set is
    /// refused, since it most often means a mistyped network.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| "is not an IPv4 or IPv6 address or CIDR range".to_owned())?;
        let full = full_length(address);
        let prefix = match prefix {
            None => full,
            Some(digits) => digits
                .parse::<u8>()
                .ok()
                .filter(|n| {
                    *n <= full && digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 3
                })
                .ok_or_else(|| format!("has a prefix length outside 0 to {full}"))?,
        };
        let (address, prefix) = match address {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (address, prefix),
            },
            _ => (address, prefix),
        };
        let range = IpRange {
            network: masked(address, prefix),
            prefix,
        };
        if range.network != address {
            return Err(format!("has host bits set: the network is {range}"));
        }
        Ok(range)
    }

    /// Whether every address of this network is in `outer`.
    pub fn within(&self, outer: &IpRange) -> bool {
        full_length(self.network) == full_length(outer.network)
            && outer.prefix <= self.prefix
            && masked(self.network, outer.prefix) == outer.network
    }

    /// Whether `address` is in this network; an address of the other family never is.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                masked(address, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

/// 32 for IPv4, 128 for IPv6.
fn full_length(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `address` with every bit after the first `prefix` cleared.
fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == full_length(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

/// The networks a key is accepted from; empty means any address. Kept normalised: each range
/// in its canonical form, each once, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps(Vec<IpRange>);

impl AllowedIps {
    /// The most ranges one key may carry.
    pub const MAX: usize = 100;

    /// Reads a list of addresses and CIDR ranges, refusing the whole list at its first bad
    /// entry or when it is longer than [`AllowedIps::MAX`].
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InputError> {
        if entries.len() > Self::MAX {
            return Err(InputError::InvalidAllowedIps(format!(
                "a key allows at most {} addresses or ranges",
                Self::MAX
            )));
        }
        let mut ranges: Vec<IpRange> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let range = IpRange::parse(entry.as_ref()).map_err(|why| {
                InputError::InvalidAllowedIps(format!("allowed_ips[{index}] {why}"))
            })?;
            if !ranges.contains(&range) {
                ranges.push(range);
            }
        }
        Ok(Self(ranges))
    }

    /// Whether the list is empty, which lets every address in.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request from `address` may use the key: always when the list is empty, else
    /// when a range holds it. An IPv4-mapped IPv6 address is matched as its IPv4 form.
    pub fn allows(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.is_empty() || self.0.iter().any(|range| range.contains(address))
    }

    /// Whether every address `other` lets in, this list lets in too: a key held to this list
    /// may make only keys held within it. An empty list lets in every address, so it covers
    /// any list, and no other list covers it.
    pub fn covers(&self, other: &AllowedIps) -> bool {
        self.is_empty()
            || (!other.is_empty()
                && other
                    .iter()
                    .all(|inner| self.iter().any(|outer| inner.within(outer))))
    }

    /// Whether both lists hold the same ranges, in whatever order: a change to this list
    /// changes nothing.
    pub fn same_ranges(&self, other: &AllowedIps) -> bool {
        let sorted = |list: &AllowedIps| {
            let mut ranges = list.0.clone();
            ranges.sort_unstable();
            ranges
        };
        sorted(self) == sorted(other)
    }

    /// The ranges, in their canonical form.
    pub fn iter(&self) -> impl Iterator<Item = &IpRange> {
        self.0.iter()
    }
}

impl Serialize for AllowedIps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for AllowedIps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        AllowedIps::parse(&entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn entries_are_read_in_their_canonical_form() {
        let list = AllowedIps::parse(&[
            "203.0.113.7",
            "10.0.0.0/8",
            "2001:db8::/32",
            "::ffff:198.51.100.0/120",
            "::ffff:192.0.2.1",
            "10.0.0.0/8",
            "0.0.0.0/0",
        ])
        .unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "203.0.113.7",
                "10.0.0.0/8",
                "2001:db8::/32",
                "198.51.100.0/24",
                "192.0.2.1",
                "0.0.0.0/0"
            ],
            "mapped addresses are IPv4, a repeated range is kept once"
        );
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<AllowedIps>(&json).unwrap(), list);
    }

    #[test]
    fn bad_entries_are_refused_with_their_position() {
        for (entry, why) in [
            ("10.0.0.1/8", "host bits set: the network is 10.0.0.0/8"),
            (
                "2001:db8::1/32",
                "host bits set: the network is 2001:db8::/32",
            ),
            ("10.0.0.0/33", "prefix length outside 0 to 32"),
            ("2001:db8::/129", "prefix length outside 0 to 128"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0/0008", "prefix length"),
            ("10.0.0", "not an IPv4 or IPv6 address"),
            ("010.0.0.1", "not an IPv4 or IPv6 address"),
            ("fe80::1%eth0", "not an IPv4 or IPv6 address"),
            ("example.com", "not an IPv4 or IPv6 address"),
            ("", "not an IPv4 or IPv6 address"),
            (" 10.0.0.1", "not an IPv4 or IPv6 address"),
        ] {
            let Err(InputError::InvalidAllowedIps(message)) =
                AllowedIps::parse(&["192.0.2.1", entry])
            else {
                panic!("{entry:?} is refused")
            };
            assert!(message.starts_with("allowed_ips[1] "), "{message}");
            assert!(message.contains(why), "{entry:?}: {message}");
            assert!(
                entry.is_empty() || !message.contains(entry),
                "a message never repeats what was sent, which may be a pasted key: {message}"
            );
        }
        let many: Vec<String> = (0..=AllowedIps::MAX)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert!(AllowedIps::parse(&many).is_err());
        assert_eq!(
            AllowedIps::parse(&many[..AllowedIps::MAX])
                .unwrap()
                .iter()
                .count(),
            AllowedIps::MAX
        );
    }

    #[test]
    fn an_address_is_matched_by_family_and_an_empty_list_lets_every_address_in() {
        let list = AllowedIps::parse(&["198.51.100.0/24", "2001:db8::/32"]).unwrap();
        assert!(list.allows(ip("198.51.100.200")));
        assert!(list.allows(ip("::ffff:198.51.100.200")), "mapped is IPv4");
        assert!(!list.allows(ip("198.51.101.1")));
        assert!(list.allows(ip("2001:db8:ffff::1")));
        assert!(!list.allows(ip("2001:db9::1")));
        let everything4 = AllowedIps::parse(&["0.0.0.0/0"]).unwrap();
        assert!(everything4.allows(ip("203.0.113.9")));
        assert!(
            !everything4.allows(ip("2001:db8::1")),
            "IPv4's /0 is not IPv6"
        );
        assert!(AllowedIps::default().allows(ip("203.0.113.9")));
    }

    #[test]
    fn a_list_covers_another_when_each_of_its_networks_lies_inside_one_of_its_own() {
        let list = |entries: &[&str]| AllowedIps::parse(entries).unwrap();
        let runner = list(&["10.1.0.0/16", "2001:db8::/32"]);
        assert!(runner.covers(&list(&["10.1.2.0/24", "10.1.0.0/16", "2001:db8:1::7"])));
        assert!(!runner.covers(&list(&["10.0.0.0/8"])), "wider than its own");
        assert!(
            !list(&["10.0.0.0/16"]).covers(&list(&["10.0.0.0/8"])),
            "same start, wider"
        );
        assert!(!list(&["0.0.0.0/8"]).covers(&list(&["0.0.0.0/0"])));
        assert!(
            !runner.covers(&list(&["10.1.2.0/24", "10.2.0.1"])),
            "every network must lie inside, not one"
        );
        assert!(!runner.covers(&list(&["10.2.0.1"])));
        assert!(
            runner.covers(&list(&["::ffff:10.1.0.0/112"])),
            "mapped is its IPv4 form"
        );
        assert!(!runner.covers(&list(&["0.0.0.0/0"])));
        assert!(
            !runner.covers(&AllowedIps::default()),
            "no list is every address"
        );
        assert!(AllowedIps::default().covers(&runner));
        assert!(AllowedIps::default().covers(&AllowedIps::default()));
        assert!(
            !list(&["10.1.0.0/16"]).covers(&list(&["::a01:0/112"])),
            "families apart"
        );
    }

    /// A range of either family, as text, with its host bits clear.
    fn range() -> impl Strategy<Value = (IpAddr, u8)> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| (IpAddr::V4(Ipv4Addr::from(a)), p)),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| (IpAddr::V6(Ipv6Addr::from(a)), p)),
        ]
    }

    /// An address near one of `bases` (sharing a random number of its leading bits) or anywhere.
    fn near(bases: Vec<IpAddr>) -> impl Strategy<Value = IpAddr> {
        (0..bases.len(), any::<u128>(), 0u32..=128, any::<bool>()).prop_map(
            move |(i, noise, keep, v6)| match bases[i] {
                IpAddr::V4(base) if !v6 || keep % 2 == 0 => {
                    let keep = keep.min(32);
                    let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
                    IpAddr::V4(((u32::from(base) & mask) | (noise as u32 & !mask)).into())
                }
                IpAddr::V6(base) if v6 || keep % 2 == 0 => {
                    let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                    IpAddr::V6(((u128::from(base) & mask) | (noise & !mask)).into())
                }
                IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::from(noise)),
                IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::from(noise as u32)),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// 200 random lists, 50 addresses each: 10,000 addresses, every one matched as the
        /// `ipnet` crate matches it.
        #[test]
        fn matching_agrees_with_ipnet(
            (ranges, addresses) in prop::collection::vec(range(), 1..20).prop_flat_map(|ranges| {
                let bases = ranges.iter().map(|(a, _)| *a).collect();
                (Just(ranges), prop::collection::vec(near(bases), 50))
            })
        ) {
            let nets: Vec<ipnet::IpNet> = ranges
                .iter()
                .map(|(a, p)| ipnet::IpNet::new(*a, *p).unwrap().trunc())
                .collect();
            let texts: Vec<String> = nets.iter().map(ToString::to_string).collect();
            let list = AllowedIps::parse(&texts).unwrap();
            for address in addresses {
                let reference = nets.iter().any(|net| net.contains(&address.to_canonical()));
                prop_assert_eq!(list.allows(address), reference, "{} in {:?}", address, texts);
            }
        }
    }
}
