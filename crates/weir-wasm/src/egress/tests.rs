//! Which addresses of an answer are connected to, given the grants that allowed the request.

use std::net::IpAddr;

use super::{Exceptions, sort_answer};
use crate::state::HttpGrant;

fn grant(host: &str) -> HttpGrant {
    HttpGrant {
        scheme: None,
        host: host.to_owned(),
        port: None,
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

#[test]
fn a_wildcard_or_a_name_grant_reaches_only_public_addresses() {
    for host in ["*.example.com", "api.example.com"] {
        let g = grant(host);
        let exceptions = Exceptions::of(&[&g]);
        assert_eq!(exceptions, Exceptions::default(), "{host}");
        let (allowed, refused) = sort_answer(
            &ips(&[
                "127.0.0.1",
                "10.0.0.5",
                "93.184.215.14",
                "::ffff:127.0.0.1",
                "::1",
            ]),
            &exceptions,
        );
        assert_eq!(allowed, ips(&["93.184.215.14"]), "{host}");
        assert_eq!(
            refused.iter().map(|r| r.0).collect::<Vec<_>>(),
            ips(&["127.0.0.1", "10.0.0.5", "::ffff:127.0.0.1", "::1"])
        );
    }
}

#[test]
fn a_literal_grant_reaches_exactly_its_address() {
    let g = grant("127.0.0.1");
    let exceptions = Exceptions::of(&[&g]);
    let (allowed, refused) = sort_answer(&ips(&["127.0.0.1", "127.0.0.2"]), &exceptions);
    assert_eq!(allowed, ips(&["127.0.0.1"]));
    assert_eq!(refused.len(), 1);
}

#[test]
fn a_localhost_grant_reaches_loopback_and_nothing_else_private() {
    let g = grant("localhost");
    let exceptions = Exceptions::of(&[&g]);
    let (allowed, refused) = sort_answer(
        &ips(&[
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
        ]),
        &exceptions,
    );
    assert_eq!(allowed, ips(&["127.0.0.1", "::1", "::ffff:127.0.0.1"]));
    assert_eq!(
        refused.iter().map(|r| r.0).collect::<Vec<_>>(),
        ips(&["10.0.0.1", "169.254.169.254"])
    );
}
