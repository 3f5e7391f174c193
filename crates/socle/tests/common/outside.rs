//! An "outside" host for a test cloud, as the Internet would be: a network
//! namespace joined to the root namespace by a veth, routing the cloud's
//! public IP pool through the root namespace (where socle-net routes each
//! public IP to its Net's uplink). Servers in it see the real source address
//! of what reaches them. Everything it creates is removed on Drop, also when
//! the test panics.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use super::{sh, TestCloud};

pub struct Outside {
    /// `<cloud prefix>out`: not `<prefix>-…`, so never taken for a Net.
    pub ns: String,
    /// The root-namespace end of the veth.
    pub root_if: String,
    pub root_ip: Ipv4Addr,
    /// The outside host's own address.
    pub ip: Ipv4Addr,
}

impl Outside {
    /// The outside of `cloud`, which was started with `--public-ip-pool
    /// pool`. Its link is the /30 of the cloud's slot, from a range the
    /// host does not route.
    pub fn new(cloud: &TestCloud, pool: &str) -> Outside {
        let prefix = cloud.net_prefix();
        let link = cloud.slot.outside_link();
        let o = Outside {
            ns: format!("{prefix}out"),
            root_if: format!("{prefix}o"),
            root_ip: link.addr(1),
            ip: link.addr(2),
        };
        o.remove();
        // From here on Drop cleans up, whatever fails below.
        super::linked_namespace(&o.ns, &o.root_if, o.root_ip, o.ip, pool);
        o
    }

    /// A TCP server on `port` of the outside host that answers each
    /// connection with the source address it sees, then closes. Returns the
    /// addresses seen so far (a connection is recorded when accepted).
    pub fn serve_peer_echo(&self, port: u16) -> Arc<Mutex<Vec<Ipv4Addr>>> {
        let listener = listen_in(&self.ns, SocketAddrV4::new(self.ip, port));
        let seen: Arc<Mutex<Vec<Ipv4Addr>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { return };
                let Ok(std::net::SocketAddr::V4(peer)) = c.peer_addr() else { continue };
                record.lock().unwrap().push(*peer.ip());
                let _ = c.write_all(peer.ip().to_string().as_bytes());
            }
        });
        seen
    }

    fn remove(&self) {
        let _ = sh(&format!("ip netns del {} 2>/dev/null; ip link del {} 2>/dev/null", self.ns, self.root_if));
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A TCP listener created inside the namespace `ns` (a socket stays in the
/// namespace it was made in, whichever thread uses it later).
pub fn listen_in(ns: &str, addr: SocketAddrV4) -> TcpListener {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    std::thread::spawn(move || {
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        TcpListener::bind(addr).expect("bind in the namespace")
    })
    .join()
    .unwrap()
}
