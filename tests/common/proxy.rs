//! A loopback TCP proxy between a game server and its database that a test can stall or cut:
//! stalled, it keeps every connection open and forwards nothing (a frozen database, or a network
//! that swallows packets); cut, it closes every connection and refuses new ones (a partition the
//! operating system notices).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASS: u8 = 0;
const STALL: u8 = 1;
const CUT: u8 = 2;

#[derive(Clone)]
pub struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            mode: Arc::new(AtomicU8::new(PASS)),
            open: Arc::default(),
        };
        let accepting = proxy.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.mode.load(Ordering::SeqCst) == CUT {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                // As PostgreSQL and its clients do: no Nagle delay on forwarded pieces.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = accepting.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                accepting.pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                accepting.pump(server, client);
            }
        });
        proxy
    }

    /// Copies `from` to `to` while passing; holds the bytes while stalled; stops when cut.
    fn pump(&self, mut from: TcpStream, mut to: TcpStream) {
        let mode = self.mode.clone();
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match mode.load(Ordering::SeqCst) {
                    CUT => break,
                    STALL => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    _ => {}
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        // Bytes read just before a stall are held until it ends.
                        while mode.load(Ordering::SeqCst) == STALL {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        if mode.load(Ordering::SeqCst) == CUT || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }

    /// `host=127.0.0.1 port=…` plus the rest of a `key=value` connection string.
    pub fn url(&self, rest: &str) -> String {
        format!("host=127.0.0.1 port={} {rest}", self.port)
    }

    /// Forward again.
    pub fn pass(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// Keep connections open, forward nothing.
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
    }

    /// Close every connection and refuse new ones until [`Proxy::pass`].
    #[allow(dead_code)] // not every test binary cuts
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
