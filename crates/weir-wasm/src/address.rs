//! Which IP addresses outbound HTTP from a function may reach: the ranges that are not
//! the public internet (loopback, private, link-local, CGNAT, documentation, multicast,
//! reserved and their IPv6 counterparts and IPv4-embedding forms) are refused unless a
//! grant names the address itself. Pure functions over addresses; `egress.rs` applies them
//! to the addresses it is about to connect to.
//!
//! The ranges follow IANA's IPv4 and IPv6 Special-Purpose Address Registries: a range is
//! refused when the registry says it is not globally reachable, or when it embeds an IPv4
//! address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) whose reach depends on that
//! address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused: the special-purpose range it lies in, and for an IPv6
/// address that embeds an IPv4 one (IPv4-mapped, NAT64, 6to4), that IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) range: Range,
    pub(crate) embedded: Option<Ipv4Addr>,
}

impl Refused {
    fn range(range: Range) -> Refused {
        Refused {
            range,
            embedded: None,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.embedded {
            Some(v4) => write!(f, "an IPv6 form of {v4}, {}", self.range),
            None => write!(f, "{}", self.range),
        }
    }
}

/// A special-purpose address range that outbound HTTP does not reach by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    Unspecified,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    ProtocolAssignments,
    Documentation,
    Benchmarking,
    Multicast,
    Reserved,
    Broadcast,
    Relay6to4,
    UniqueLocal,
    SiteLocal,
    Ipv4Compatible,
    Nat64Local,
    DiscardOnly,
    Teredo,
    Orchid,
    Srv6,
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Range::Unspecified => "an unspecified (this-network) address",
            Range::Loopback => "a loopback address",
            Range::Private => "a private address",
            Range::SharedCgnat => "a shared (carrier-grade NAT) address",
            Range::LinkLocal => "a link-local address",
            Range::ProtocolAssignments => "an IETF protocol assignment address",
            Range::Documentation => "a documentation address",
            Range::Benchmarking => "a benchmarking address",
            Range::Multicast => "a multicast address",
            Range::Reserved => "a reserved address",
            Range::Broadcast => "the broadcast address",
            Range::Relay6to4 => "a 6to4 relay anycast address",
            Range::UniqueLocal => "a unique local address",
            Range::SiteLocal => "a site-local address",
            Range::Ipv4Compatible => "an IPv4-compatible IPv6 address",
            Range::Nat64Local => "a local-use NAT64 address",
            Range::DiscardOnly => "a discard-only address",
            Range::Teredo => "a Teredo address",
            Range::Orchid => "an ORCHID address",
            Range::Srv6 => "an SRv6 segment identifier",
        };
        f.write_str(name)
    }
}

/// The refused range `ip` lies in, or none for a public address.
pub(crate) fn refused(ip: IpAddr) -> Option<Refused> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn refused_v4(ip: Ipv4Addr) -> Option<Refused> {
    const RANGES: &[([u8; 4], u32, Range)] = &[
        ([0, 0, 0, 0], 8, Range::Unspecified),
        ([10, 0, 0, 0], 8, Range::Private),
        ([100, 64, 0, 0], 10, Range::SharedCgnat),
        ([127, 0, 0, 0], 8, Range::Loopback),
        ([169, 254, 0, 0], 16, Range::LinkLocal),
        ([172, 16, 0, 0], 12, Range::Private),
        ([192, 0, 0, 0], 24, Range::ProtocolAssignments),
        ([192, 0, 2, 0], 24, Range::Documentation),
        ([192, 88, 99, 0], 24, Range::Relay6to4),
        ([192, 168, 0, 0], 16, Range::Private),
        ([198, 18, 0, 0], 15, Range::Benchmarking),
        ([198, 51, 100, 0], 24, Range::Documentation),
        ([203, 0, 113, 0], 24, Range::Documentation),
        ([224, 0, 0, 0], 4, Range::Multicast),
        ([255, 255, 255, 255], 32, Range::Broadcast),
        ([240, 0, 0, 0], 4, Range::Reserved),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, range)| Refused::range(*range))
}

fn refused_v6(ip: Ipv6Addr) -> Option<Refused> {
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some(Refused::range(Range::Unspecified));
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some(Refused::range(Range::Loopback));
    }
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from(bits as u32);
    let embeds = |v4: Ipv4Addr| {
        refused_v4(v4).map(|why| Refused {
            range: why.range,
            embedded: Some(v4),
        })
    };
    // ::ffff:a.b.c.d reaches a.b.c.d through a dual-stack socket; 64:ff9b::a.b.c.d through
    // a NAT64 gateway; 2002:aabb:ccdd::/48 through a 6to4 relay.
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        return embeds(low_v4);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return embeds(Ipv4Addr::from((bits >> 80) as u32));
    }
    const RANGES: &[([u16; 8], u32, Range)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, Range::Ipv4Compatible),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Range::Nat64Local),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Range::DiscardOnly),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Range::Teredo),
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, Range::Benchmarking),
        ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, Range::Orchid),
        ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, Range::Orchid),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Range::Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Range::Documentation),
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, Range::Srv6),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Range::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Range::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Range::SiteLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Range::Multicast),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, range)| Refused::range(*range))
}

/// The IP address a URL or grant host names literally (`127.0.0.1`, `[::1]`), if it is one.
pub(crate) fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

#[cfg(test)]
mod tests;
