//! The refused ranges, address by address: each range's edges, the public addresses just
//! outside them, and the IPv6 forms that embed an IPv4 address.

use std::net::IpAddr;

use super::{Range, literal, refused};

fn range(ip: &str) -> Option<Range> {
    let ip: IpAddr = ip.parse().unwrap();
    refused(ip).map(|r| r.range)
}

#[test]
fn ipv4_special_ranges_are_refused_at_both_edges() {
    let cases = [
        ("0.0.0.0", Range::Unspecified),
        ("0.255.255.255", Range::Unspecified),
        ("10.0.0.0", Range::Private),
        ("10.255.255.255", Range::Private),
        ("100.64.0.0", Range::SharedCgnat),
        ("100.127.255.255", Range::SharedCgnat),
        ("127.0.0.1", Range::Loopback),
        ("127.255.255.254", Range::Loopback),
        ("169.254.0.1", Range::LinkLocal),
        ("169.254.169.254", Range::LinkLocal),
        ("172.16.0.0", Range::Private),
        ("172.31.255.255", Range::Private),
        ("192.0.0.8", Range::ProtocolAssignments),
        ("192.0.2.1", Range::Documentation),
        ("192.88.99.1", Range::Relay6to4),
        ("192.168.0.1", Range::Private),
        ("192.168.255.255", Range::Private),
        ("198.18.0.0", Range::Benchmarking),
        ("198.19.255.255", Range::Benchmarking),
        ("198.51.100.7", Range::Documentation),
        ("203.0.113.200", Range::Documentation),
        ("224.0.0.1", Range::Multicast),
        ("239.255.255.255", Range::Multicast),
        ("240.0.0.1", Range::Reserved),
        ("255.255.255.254", Range::Reserved),
        ("255.255.255.255", Range::Broadcast),
    ];
    for (ip, expected) in cases {
        assert_eq!(range(ip), Some(expected), "{ip}");
    }
}

#[test]
fn public_ipv4_addresses_next_to_the_ranges_are_allowed() {
    for ip in [
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.255",
        "192.0.3.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "203.0.112.255",
        "223.255.255.255",
    ] {
        assert_eq!(range(ip), None, "{ip}");
    }
}

#[test]
fn ipv6_special_ranges_are_refused() {
    let cases = [
        ("::", Range::Unspecified),
        ("::1", Range::Loopback),
        ("::7f00:1", Range::Ipv4Compatible),
        ("::2", Range::Ipv4Compatible),
        ("64:ff9b:1::1", Range::Nat64Local),
        ("100::1", Range::DiscardOnly),
        ("2001::1", Range::Teredo),
        ("2001:0:4136:e378::1", Range::Teredo),
        ("2001:2::1", Range::Benchmarking),
        ("2001:10::1", Range::Orchid),
        ("2001:2f::1", Range::Orchid),
        ("2001:db8::1", Range::Documentation),
        ("3fff:fff::1", Range::Documentation),
        ("5f00::1", Range::Srv6),
        ("fc00::1", Range::UniqueLocal),
        ("fd12:3456::1", Range::UniqueLocal),
        ("fe80::1", Range::LinkLocal),
        ("febf:ffff::1", Range::LinkLocal),
        ("fec0::1", Range::SiteLocal),
        ("ff02::1", Range::Multicast),
        ("ff0e::1", Range::Multicast),
    ];
    for (ip, expected) in cases {
        assert_eq!(range(ip), Some(expected), "{ip}");
    }
}

#[test]
fn public_ipv6_addresses_are_allowed() {
    for ip in [
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2001:1::1",
        "2001:db7:ffff::1",
        "2001:db9::1",
        "3fff:1000::1",
        "fbff::1",
        "fe00::1",
        "64:ff9b::808:808",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
    ] {
        assert_eq!(range(ip), None, "{ip}");
    }
}

#[test]
fn ipv6_forms_that_embed_a_refused_ipv4_address_are_refused_as_that_address() {
    for (ip, v4, expected) in [
        ("::ffff:127.0.0.1", "127.0.0.1", Range::Loopback),
        ("::ffff:7f00:1", "127.0.0.1", Range::Loopback),
        ("::ffff:10.1.2.3", "10.1.2.3", Range::Private),
        (
            "::ffff:169.254.169.254",
            "169.254.169.254",
            Range::LinkLocal,
        ),
        ("::ffff:0.0.0.0", "0.0.0.0", Range::Unspecified),
        ("64:ff9b::192.168.1.1", "192.168.1.1", Range::Private),
        ("64:ff9b::7f00:1", "127.0.0.1", Range::Loopback),
        ("2002:7f00:1::1", "127.0.0.1", Range::Loopback),
        ("2002:a9fe:a9fe::", "169.254.169.254", Range::LinkLocal),
    ] {
        let refused = refused(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip}"));
        assert_eq!(refused.range, expected, "{ip}");
        assert_eq!(refused.embedded, Some(v4.parse().unwrap()), "{ip}");
        assert!(
            refused
                .to_string()
                .starts_with(&format!("an IPv6 form of {v4}, ")),
            "{refused}"
        );
    }
}

#[test]
fn a_refusal_says_which_range_in_words() {
    let loopback = refused("127.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(loopback.to_string(), "a loopback address");
    let metadata = refused("169.254.169.254".parse().unwrap()).unwrap();
    assert_eq!(metadata.to_string(), "a link-local address");
}

#[test]
fn literal_addresses_are_recognised_with_or_without_brackets() {
    assert_eq!(literal("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(literal("[::1]"), Some("::1".parse().unwrap()));
    assert_eq!(literal("::1"), Some("::1".parse().unwrap()));
    assert_eq!(literal("localhost"), None);
    assert_eq!(literal("2130706433"), None, "a number is a name to resolve");
    assert_eq!(literal("127.1"), None, "shorthand is a name to resolve");
    assert_eq!(literal("api.example.com"), None);
}
