//! `async-net` sockets behind `asoc_async::Net`, for nodes.

use std::io;
use std::net::SocketAddr;

use asoc_async::{BoxFuture, BoxFutureRef, Net};
use async_net::{TcpListener, TcpStream, UdpSocket};

use crate::io::TcpIo;
use crate::runtime::Smol;

impl Net for Smol {
    type Stream = TcpIo;
    type Listener = TcpListener;
    type Udp = UdpSocket;

    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<io::Result<TcpListener>> {
        Box::pin(TcpListener::bind(addr))
    }

    fn tcp_local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn accept(listener: &TcpListener) -> BoxFutureRef<'_, io::Result<(Self::Stream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = listener.accept().await?;
            stream.set_nodelay(true)?;
            Ok((TcpIo::new(stream), from))
        })
    }

    fn connect(&self, target: String) -> BoxFuture<io::Result<(Self::Stream, SocketAddr)>> {
        Box::pin(async move {
            // Resolves names and tries each address in turn.
            let stream = TcpStream::connect(target.as_str()).await?;
            stream.set_nodelay(true)?;
            let to = stream.peer_addr()?;
            Ok((TcpIo::new(stream), to))
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<io::Result<UdpSocket>> {
        Box::pin(async move {
            let udp = UdpSocket::bind(addr).await?;
            udp.set_broadcast(true)?;
            Ok(udp)
        })
    }

    fn udp_local_addr(udp: &UdpSocket) -> io::Result<SocketAddr> {
        udp.local_addr()
    }

    fn recv_from<'a>(
        udp: &'a UdpSocket,
        buf: &'a mut [u8],
    ) -> BoxFutureRef<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(udp.recv_from(buf))
    }

    fn send_to<'a>(
        udp: &'a UdpSocket,
        data: &'a [u8],
        to: SocketAddr,
    ) -> BoxFutureRef<'a, io::Result<usize>> {
        Box::pin(udp.send_to(data, to))
    }
}
