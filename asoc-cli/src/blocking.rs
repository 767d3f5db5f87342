//! A minimal blocking driver: one `asoc_proto::Connection` over one
//! `std::net::TcpStream`, following the drive contract of DESIGN.md §3.
//! It makes no protocol decision; the runtime adapters replace it.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

use asoc_proto::connection::{Connection, Event};
use asoc_proto::handshake::Authenticator;
use bytes::BytesMut;

/// One connection and its socket.
pub(crate) struct Driver {
    pub(crate) conn: Connection,
    pub(crate) auth: Authenticator,
    pub(crate) socket: TcpStream,
    rx: BytesMut,
}

impl Driver {
    pub(crate) fn new(conn: Connection, auth: Authenticator, socket: TcpStream) -> Self {
        Self {
            conn,
            auth,
            socket,
            rx: BytesMut::with_capacity(1 << 20),
        }
    }

    /// Writes everything queued (blocking).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        while self.conn.pending_output() > 0 {
            let written = self.conn.write_to(Instant::now(), &mut self.socket)?;
            if written == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reads once (waiting at most until the connection's next deadline),
    /// feeds the bytes in, gives handshake verdicts and fires timers.
    pub(crate) fn read_once(&mut self) -> io::Result<()> {
        let wait = self.conn.poll_timeout().map(|t| {
            t.saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_millis(1))
        });
        self.socket.set_read_timeout(wait)?;
        let need = self.conn.bytes_needed(&self.rx).max(64 * 1024);
        self.rx.reserve(need);
        let window = self.rx.spare_capacity_mut().len().min(need);
        let start = self.rx.len();
        self.rx.resize(start + window, 0);
        let got = match self.socket.read(&mut self.rx[start..]) {
            Ok(n) => Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => {
                self.rx.truncate(start);
                self.conn.handle_transport_error(Instant::now());
                return Err(e);
            }
        };
        self.rx.truncate(start + got.unwrap_or(0));
        let now = Instant::now();
        match got {
            Some(0) => self.conn.handle_eof(now),
            Some(_) => self.conn.handle_input(now, &mut self.rx),
            None => {}
        }
        self.auth.drive(now, &mut self.conn);
        self.conn.handle_timeout(now);
        Ok(())
    }

    /// The next event, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.conn.poll_event()
    }
}
