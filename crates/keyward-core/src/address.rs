//! Which addresses Keyward may connect to when it fetches a URL a user gave it (a JWKS, and
//! every other URL it fetches): only the public internet, unless the operator allows more.
//!
//! The lists are the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
//! its updates): every block that is not globally reachable, plus reserved and multicast
//! space. IPv6 outside `2000::/3` is not allocated for global unicast and is refused whole.
//! An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64's
//! `64:ff9b::/96`, 6to4's `2002::/16`) is judged as the IPv4 address it carries, so no
//! encoding reaches a private host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 blocks that are not globally reachable, as (network, prefix length).
const IPV4_NOT_PUBLIC: [([u8; 4], u8); 16] = [
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private use
    ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link local, cloud metadata services among them
    ([172, 16, 0, 0], 12),   // private use
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (DS-Lite, NAT64 discovery, …)
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private use
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and the limited broadcast address
    ([255, 255, 255, 255], 32),
];

/// IPv6 blocks inside `2000::/3` that are not globally reachable.
const IPV6_NOT_PUBLIC: [([u16; 2], u8); 3] = [
    ([0x2001, 0x0000], 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID, …
    ([0x2001, 0x0db8], 32), // documentation
    ([0x3fff, 0x0000], 20), // documentation (RFC 9637)
];

/// Whether a fetch may connect to `ip` without the operator's leave.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let address = u32::from(ip);
    !IPV4_NOT_PUBLIC
        .iter()
        .any(|&(network, length)| within(address, u32::from_be_bytes(network), length))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(carried) = carried_ipv4(ip) {
        return is_public_v4(carried);
    }
    let address = u128::from(ip);
    if !within128(address, 0x2000 << 112, 3) {
        return false;
    }
    !IPV6_NOT_PUBLIC.iter().any(|&([high, low], length)| {
        let network = (u128::from(high) << 112) | (u128::from(low) << 96);
        within128(address, network, length)
    })
}

/// The IPv4 address an IPv6 address carries, in the forms that route to it.
fn carried_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let low32 = || Ipv4Addr::from((u32::from(segments[6]) << 16) | u32::from(segments[7]));
    match segments {
        // IPv4-mapped `::ffff:a.b.c.d` and IPv4-compatible `::a.b.c.d` (`::` and `::1`
        // among them, judged as 0.0.0.0 and 0.0.0.1, which are refused).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low32()),
        // NAT64's well-known prefix, `64:ff9b::a.b.c.d`.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low32()),
        // 6to4, `2002:aabb:ccdd::/48`.
        [0x2002, high, low, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))),
        _ => None,
    }
}

fn within(address: u32, network: u32, length: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
    address & mask == network & mask
}

fn within128(address: u128, network: u128, length: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
    address & mask == network & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        is_public(text.parse().expect(text))
    }

    #[test]
    fn special_purpose_ipv4_blocks_are_refused() {
        for refused in [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!public(refused), "{refused}");
        }
        for allowed in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.3.1",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert!(public(allowed), "{allowed}");
        }
    }

    #[test]
    fn special_purpose_ipv6_blocks_are_refused() {
        for refused in [
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "64:ff9b:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "4000::1",
        ] {
            assert!(!public(refused), "{refused}");
        }
        for allowed in ["2606:4700::1111", "2a00:1450:4001::200e", "2001:4860::8888"] {
            assert!(public(allowed), "{allowed}");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_are_judged_as_ipv4() {
        for refused in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(!public(refused), "{refused}");
        }
        for allowed in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert!(public(allowed), "{allowed}");
        }
    }
}
