//! `Net` for `Smol`: TCP listen/accept/connect and UDP, all on loopback.
//! UDP is unicast only: nothing is ever sent to a broadcast address.

use std::net::{Ipv4Addr, SocketAddr};

use asoc_async::{Connection, Net};
use asoc_smol::{DriverConfig, Smol};
use asoc_testkit::scenarios::connection_auth as auth;
use bytes::Bytes;
use futures_lite::future::zip;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Listen, then accept and connect (by name) through the trait, and run an
/// ASoc connection over the resulting streams.
async fn tcp_scenario(rt: Smol) {
    let listener = rt.bind_tcp(loopback()).await.unwrap();
    let addr = Smol::tcp_local_addr(&listener).unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let (accepted, connected) = zip(
        Smol::accept(&listener),
        rt.connect(format!("localhost:{}", addr.port())),
    )
    .await;
    let (server_io, from) = accepted.unwrap();
    let (client_io, to) = connected.unwrap();
    assert_eq!(to, addr);
    assert!(from.ip().is_loopback());

    let server = async {
        let conn = Connection::accept(&rt, server_io, &auth(2, KEY), DriverConfig::default())
            .await
            .unwrap();
        conn.accept_stream()
            .await
            .unwrap()
            .read_to_end()
            .await
            .unwrap()
    };
    let client = async {
        let conn = Connection::connect(&rt, client_io, &auth(1, KEY), DriverConfig::default())
            .await
            .unwrap();
        conn.send_tensor(Bytes::from_static(b"over Net"), 3)
            .await
            .unwrap();
        conn
    };
    let (got, conn) = zip(server, client).await;
    assert_eq!(got, b"over Net");
    conn.close().await;
    conn.closed().await;
}

async fn udp_scenario(rt: Smol) {
    let a = rt.bind_udp(loopback()).await.unwrap();
    let b = rt.bind_udp(loopback()).await.unwrap();
    let a_addr = Smol::udp_local_addr(&a).unwrap();
    let b_addr = Smol::udp_local_addr(&b).unwrap();
    assert!(b_addr.ip().is_loopback());
    let mut buf = [0u8; 64];
    let (sent, received) = zip(
        Smol::send_to(&a, b"announce", b_addr),
        Smol::recv_from(&b, &mut buf),
    )
    .await;
    assert_eq!(sent.unwrap(), 8);
    let (n, from) = received.unwrap();
    assert_eq!(from, a_addr);
    assert_eq!(&buf[..n], b"announce");
}

#[test]
fn smol_net_tcp_listen_accept_connect_by_name() {
    smol::block_on(tcp_scenario(Smol::global()));
}

#[test]
fn async_std_net_tcp_listen_accept_connect_by_name() {
    async_std::task::block_on(tcp_scenario(Smol::with_spawner(|task| {
        async_std::task::spawn(task);
    })));
}

#[test]
fn smol_net_udp_unicast_send_and_receive_on_loopback() {
    smol::block_on(udp_scenario(Smol::global()));
}
