//! `id@host:port` parsing and printing, address lists, and the wire `NetAddress` conversion.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cometmesh_core::addr::{
    AddrError, Host, NetAddr, PeerAddr, PeerListError, parse_peer_list, strip_scheme,
};
use cometmesh_core::ids::{NodeId, NodeIdError};
use cometmesh_core::wire::proto::NetAddress;
use proptest::prelude::*;

const ID: &str = "7627de929814c7484dc6bf94f60166ab3115b316";

fn id() -> NodeId {
    ID.parse().unwrap()
}

fn parse(s: &str) -> Result<PeerAddr, AddrError> {
    s.parse()
}

#[test]
fn parses_and_prints_ipv4() {
    let addr = parse(&format!("{ID}@1.2.3.4:26656")).unwrap();
    assert_eq!(
        addr,
        PeerAddr {
            id: id(),
            host: Host::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            port: 26656
        }
    );
    assert_eq!(addr.to_string(), format!("{ID}@1.2.3.4:26656"));
    assert_eq!(
        addr.resolved(),
        Some(NetAddr::new(id(), "1.2.3.4:26656".parse().unwrap()))
    );
}

#[test]
fn strips_any_scheme() {
    for scheme in ["tcp://", "mconn://", "://"] {
        let addr = parse(&format!("{scheme}{ID}@1.2.3.4:26656")).unwrap();
        assert_eq!(addr.to_string(), format!("{ID}@1.2.3.4:26656"));
    }
}

#[test]
fn strips_the_scheme_exactly_like_go() {
    assert_eq!(strip_scheme("tcp://a@b:1"), "a@b:1");
    assert_eq!(strip_scheme("a@b:1"), "a@b:1");
    // Go keeps the part between the first and the second `://`.
    assert_eq!(strip_scheme("tcp://a@b:1://junk"), "a@b:1");
    assert_eq!(
        parse(&format!("tcp://{ID}@1.2.3.4:1://junk"))
            .unwrap()
            .to_string(),
        format!("{ID}@1.2.3.4:1")
    );
}

#[test]
fn node_info_listen_addresses() {
    let addr = PeerAddr::from_id_and_listen_addr(ID, "tcp://0.0.0.0:26656").unwrap();
    assert_eq!(addr.to_string(), format!("{ID}@0.0.0.0:26656"));
    let addr = PeerAddr::from_id_and_listen_addr(ID, "[::1]:26656").unwrap();
    assert_eq!(addr.to_string(), format!("{ID}@[::1]:26656"));
    assert!(matches!(
        PeerAddr::from_id_and_listen_addr("nope", "tcp://0.0.0.0:26656"),
        Err(AddrError::BadId { .. })
    ));
    assert!(matches!(
        PeerAddr::from_id_and_listen_addr(ID, "tcp://0.0.0.0"),
        Err(AddrError::MissingPort(_))
    ));
}

#[test]
fn parses_and_prints_bracketed_ipv6() {
    let addr = parse(&format!("{ID}@[2001:DB8:0:0::1]:26656")).unwrap();
    assert_eq!(
        addr.host,
        Host::Ip(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()))
    );
    assert_eq!(addr.to_string(), format!("{ID}@[2001:db8::1]:26656"));
    assert_eq!(
        addr.resolved().unwrap().to_string(),
        format!("{ID}@[2001:db8::1]:26656")
    );
}

#[test]
fn ipv4_mapped_ipv6_prints_as_ipv4_like_go() {
    let addr = parse(&format!("{ID}@[::ffff:1.2.3.4]:26656")).unwrap();
    assert_eq!(addr.to_string(), format!("{ID}@1.2.3.4:26656"));
    let net = NetAddr::new(id(), "[::ffff:1.2.3.4]:1".parse().unwrap());
    assert_eq!(net.to_string(), format!("{ID}@1.2.3.4:1"));
}

#[test]
fn keeps_dns_names_as_names() {
    let addr = parse(&format!("tcp://{ID}@Seed-1.Example.com:26656")).unwrap();
    assert_eq!(addr.host, Host::Dns("seed-1.example.com".to_owned()));
    assert_eq!(addr.resolved(), None);
    assert_eq!(addr.to_string(), format!("{ID}@seed-1.example.com:26656"));
    assert_eq!(
        parse(&format!("{ID}@localhost:1")).unwrap().host,
        Host::Dns("localhost".to_owned())
    );
    assert_eq!(
        format!("{ID}@seed.example.com:1").parse::<NetAddr>(),
        Err(AddrError::NotAnIp(format!("{ID}@seed.example.com:1")))
    );
}

#[test]
fn accepts_upper_case_ids_and_prints_lower_case() {
    let addr = parse(&format!("{}@1.2.3.4:1", ID.to_uppercase())).unwrap();
    assert_eq!(addr.to_string(), format!("{ID}@1.2.3.4:1"));
}

#[test]
fn port_bounds() {
    assert_eq!(parse(&format!("{ID}@1.2.3.4:65535")).unwrap().port, 65535);
    assert_eq!(parse(&format!("{ID}@1.2.3.4:0")).unwrap().port, 0);
}

#[test]
fn empty() {
    assert_eq!(parse(""), Err(AddrError::Empty));
    assert_eq!(parse("tcp://"), Err(AddrError::Empty));
}

#[test]
fn missing_at() {
    let input = "1.2.3.4:26656";
    assert_eq!(parse(input), Err(AddrError::MissingAt(input.to_owned())));
    assert_eq!(
        parse(input).unwrap_err().to_string(),
        "address \"1.2.3.4:26656\" has no node id: expected id@host:port"
    );
}

#[test]
fn too_many_at() {
    let input = format!("{ID}@{ID}@1.2.3.4:26656");
    assert_eq!(parse(&input), Err(AddrError::TooManyAt(input.clone())));
}

#[test]
fn bad_id() {
    for (input, want) in [
        ("@1.2.3.4:1".to_owned(), NodeIdError::Empty),
        (
            "xyz@1.2.3.4:1".to_owned(),
            NodeIdError::NotHex("xyz".to_owned()),
        ),
        (
            "abcd@1.2.3.4:1".to_owned(),
            NodeIdError::WrongLength {
                id: "abcd".to_owned(),
                len: 2,
            },
        ),
    ] {
        assert_eq!(
            parse(&input),
            Err(AddrError::BadId {
                addr: input.clone(),
                source: want
            })
        );
    }
    assert_eq!(
        parse("abcd@1.2.3.4:1").unwrap_err().to_string(),
        "address \"abcd@1.2.3.4:1\" has a bad node id: \
         node id \"abcd\" has 2 bytes, expected 20 (40 hex characters)"
    );
}

#[test]
fn missing_port() {
    for host in ["1.2.3.4", "1.2.3.4:", "[::1]", "[::1]:", "example.com"] {
        let input = format!("{ID}@{host}");
        assert_eq!(parse(&input), Err(AddrError::MissingPort(input.clone())));
    }
}

#[test]
fn bad_port() {
    for port in [
        "65536",
        "abc",
        "+80",
        "-1",
        "26656 ",
        "99999999999999999999",
    ] {
        let input = format!("{ID}@1.2.3.4:{port}");
        assert_eq!(
            parse(&input),
            Err(AddrError::BadPort {
                addr: input.clone(),
                port: port.to_owned()
            }),
            "{input}"
        );
    }
    assert_eq!(
        parse(&format!("{ID}@1.2.3.4:65536"))
            .unwrap_err()
            .to_string(),
        format!(
            "address \"{ID}@1.2.3.4:65536\" has a bad port \"65536\": expected a number from 0 to 65535"
        )
    );
}

#[test]
fn empty_host() {
    for hostport in [":26656", "[]:26656"] {
        let input = format!("{ID}@{hostport}");
        assert_eq!(parse(&input), Err(AddrError::EmptyHost(input.clone())));
    }
}

#[test]
fn unbracketed_ipv6() {
    for hostport in ["::1:26656", "2001:db8::1:26656", "::1"] {
        let input = format!("{ID}@{hostport}");
        assert_eq!(
            parse(&input),
            Err(AddrError::UnbracketedIpv6(input.clone()))
        );
    }
    assert!(
        parse(&format!("{ID}@::1:26656"))
            .unwrap_err()
            .to_string()
            .contains("write id@[ipv6]:port")
    );
}

#[test]
fn bad_brackets() {
    for hostport in [
        "[::1:26656",
        "[::1]x:26656",
        "host]:1",
        "[a[b]:1",
        "[::1]:1]",
        "a[b",
    ] {
        let input = format!("{ID}@{hostport}");
        assert_eq!(
            parse(&input),
            Err(AddrError::BadBrackets(input.clone())),
            "{input}"
        );
    }
}

#[test]
fn bad_host() {
    for host in [
        "exa mple.com",
        "a..b",
        ".a",
        "[fe80::1%eth0]",
        "a/b",
        "é.example",
    ] {
        let input = format!("{ID}@{host}:1");
        let want_host = host.trim_start_matches('[').trim_end_matches(']');
        assert_eq!(
            parse(&input),
            Err(AddrError::BadHost {
                addr: input.clone(),
                host: want_host.to_owned()
            }),
            "{input}"
        );
    }
    let long = format!("{ID}@{}.com:1", "a".repeat(64));
    assert!(matches!(parse(&long), Err(AddrError::BadHost { .. })));
}

#[test]
fn peer_lists() {
    let list = format!(" {ID}@1.2.3.4:1 ,, {ID}@[::1]:2,tcp://{ID}@node.example:3 ,");
    let peers = parse_peer_list(&list).unwrap();
    let printed: Vec<String> = peers.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [
            format!("{ID}@1.2.3.4:1"),
            format!("{ID}@[::1]:2"),
            format!("{ID}@node.example:3")
        ]
    );
    assert_eq!(parse_peer_list("").unwrap(), []);
    assert_eq!(parse_peer_list(" , ,").unwrap(), []);

    let bad = format!("{ID}@1.2.3.4:1,, 1.2.3.4:2");
    let err = parse_peer_list(&bad).unwrap_err();
    assert_eq!(
        err,
        PeerListError {
            position: 2,
            source: AddrError::MissingAt("1.2.3.4:2".to_owned())
        }
    );
    assert_eq!(
        err.to_string(),
        "entry 2 of the address list: address \"1.2.3.4:2\" has no node id: expected id@host:port"
    );
}

#[test]
fn wire_round_trip() {
    let addr = NetAddr::new(id(), "1.2.3.4:26656".parse().unwrap());
    let wire = addr.to_proto();
    assert_eq!(
        wire,
        NetAddress {
            id: ID.to_owned(),
            ip: "1.2.3.4".to_owned(),
            port: 26656
        }
    );
    assert_eq!(NetAddr::from_proto(&wire), Ok(addr));

    let v6 = NetAddr::new(id(), "[2001:db8:0:0:0:0:0:1]:1".parse().unwrap());
    assert_eq!(v6.to_proto().ip, "2001:db8::1");
    assert_eq!(NetAddr::try_from(&v6.to_proto()), Ok(v6));

    // A mapped address arriving from Go's side reads as IPv4.
    let mapped = NetAddress {
        id: ID.to_owned(),
        ip: "::ffff:1.2.3.4".to_owned(),
        port: 1,
    };
    assert_eq!(
        NetAddr::from_proto(&mapped).unwrap().addr,
        SocketAddr::from(([1, 2, 3, 4], 1))
    );
}

#[test]
fn wire_errors() {
    let good = NetAddress {
        id: ID.to_owned(),
        ip: "1.2.3.4".to_owned(),
        port: 26656,
    };
    for ip in ["", "example.com", "1.2.3", "01.2.3.4", "1.2.3.4:5", "[::1]"] {
        let wire = NetAddress {
            ip: ip.to_owned(),
            ..good.clone()
        };
        assert_eq!(
            NetAddr::from_proto(&wire),
            Err(AddrError::BadIp(ip.to_owned())),
            "{ip}"
        );
    }
    let wire = NetAddress {
        port: 65536,
        ..good.clone()
    };
    assert!(matches!(
        NetAddr::from_proto(&wire),
        Err(AddrError::BadPort { port, .. }) if port == "65536"
    ));
    let wire = NetAddress {
        id: "nope".to_owned(),
        ..good
    };
    assert!(matches!(
        NetAddr::from_proto(&wire),
        Err(AddrError::BadId { .. })
    ));
}

fn arb_host() -> impl Strategy<Value = Host> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Host::Ip(IpAddr::from(b))),
        any::<[u8; 16]>()
            .prop_filter("mapped addresses print as ipv4", |b| {
                Ipv6Addr::from(*b).to_ipv4_mapped().is_none()
            })
            .prop_map(|b| Host::Ip(IpAddr::from(b))),
        "[a-z0-9_-]{1,20}(\\.[a-z0-9_-]{1,20}){0,3}"
            .prop_filter("ip-like names parse as ips", |s| s
                .parse::<IpAddr>()
                .is_err())
            .prop_map(Host::Dns),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn print_parse_round_trip(id in any::<[u8; 20]>(), host in arb_host(), port in any::<u16>()) {
        let addr = PeerAddr { id: NodeId(id), host, port };
        let printed = addr.to_string();
        prop_assert_eq!(parse(&printed), Ok(addr.clone()));
        if let Some(net) = addr.resolved() {
            prop_assert_eq!(net.to_string(), printed.clone());
            prop_assert_eq!(printed.parse::<NetAddr>(), Ok(net));
            prop_assert_eq!(NetAddr::from_proto(&net.to_proto()), Ok(net));
        }
    }

    #[test]
    fn parse_never_panics(input in "\\PC{0,80}") {
        let _ = parse(&input);
        let _ = parse_peer_list(&input);
    }
}

#[test]
fn ip_literal_with_a_final_dot_is_an_ip() {
    let addr: PeerAddr = "7627de929814c7484dc6bf94f60166ab3115b316@1.2.3.4.:26656"
        .parse()
        .unwrap();
    assert_eq!(addr.host, Host::Ip("1.2.3.4".parse().unwrap()));
    let again: PeerAddr = addr.to_string().parse().unwrap();
    assert_eq!(again, addr);
}

/// DNS names: a label of 63 characters and a name of 253 (`MAX_DNS_NAME_LEN`, the final dot
/// not counted) are accepted; one character more is `BadHost`.
#[test]
fn dns_name_limits_are_crossed_by_one() {
    use cometmesh_core::addr::MAX_DNS_NAME_LEN;
    let label = |n: usize| format!("{ID}@{}.example:1", "a".repeat(n));
    assert!(matches!(parse(&label(63)).unwrap().host, Host::Dns(_)));
    assert!(matches!(parse(&label(64)), Err(AddrError::BadHost { .. })));
    // Labels of 63 characters and dots up to exactly `len` characters.
    let name = |len: usize| {
        let mut name = String::new();
        while name.len() < len {
            if !name.is_empty() {
                name.push('.');
            }
            let room = (len - name.len()).min(63);
            name.push_str(&"b".repeat(room));
        }
        assert_eq!(name.len(), len);
        name
    };
    for absolute in ["", "."] {
        let ok = format!("{ID}@{}{absolute}:1", name(MAX_DNS_NAME_LEN));
        assert_eq!(
            parse(&ok).unwrap().host,
            Host::Dns(name(MAX_DNS_NAME_LEN)),
            "{ok}"
        );
        let over = format!("{ID}@{}{absolute}:1", name(MAX_DNS_NAME_LEN + 1));
        assert!(
            matches!(parse(&over), Err(AddrError::BadHost { .. })),
            "{over}"
        );
    }
}
