//! The kernel's process-events connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`): it reports the
//! exit status of any process, not only of our children, which is how the sandbox monitor
//! learns how an init that containerd's shim reaps has ended.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;

/// A subscription to process events.
pub struct ProcEvents {
    sock: OwnedFd,
}

/// An exit: pid and its wait status (`code << 8 | signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: i32,
}

impl ProcEvents {
    /// Subscribes to the exit of process `pid` alone. The connector multicasts every fork,
    /// exec and exit of the host; a socket filter drops all but this one in the kernel, so a
    /// monitor is not woken by the host's other processes (nor by its own sandbox's 1000
    /// exits at teardown), and its queue cannot overrun.
    pub fn subscribe_exit_of(pid: i32) -> Result<Self> {
        let events = Self::subscribe()?;
        let program = exit_filter(pid);
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: fprog points at `program`, alive for the call; the kernel copies it.
        let rc = unsafe {
            libc::setsockopt(
                events.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            )
        };
        if rc < 0 {
            return Err(os_err("setsockopt(SO_ATTACH_FILTER)"));
        }
        Ok(events)
    }

    fn subscribe() -> Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(os_err("socket(NETLINK_CONNECTOR)"));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero is a valid start value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = CN_IDX_PROC;
        addr.nl_pid = 0;
        // SAFETY: addr is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(os_err("bind(CN_IDX_PROC)"));
        }
        let msg = listen_message();
        // SAFETY: sending a fully initialised buffer of the given length.
        let n = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(os_err("send(PROC_CN_MCAST_LISTEN)"));
        }
        Ok(Self { sock })
    }

    pub fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Blocks until the next batch of events and returns the exits in it.
    pub fn next_exits(&self) -> Result<Vec<Exit>> {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: receiving into a valid buffer of the given length.
            let n =
                unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Overrun: events were dropped; the caller re-checks what it waits for.
                    Some(libc::ENOBUFS) => return Ok(Vec::new()),
                    _ => return Err(Error::io("recv", "proc connector", e)),
                }
            }
            return Ok(parse_exits(&buf[..n as usize]));
        }
    }
}

fn os_err(op: &'static str) -> Error {
    Error::io(op, "proc connector", std::io::Error::last_os_error())
}

fn listen_message() -> Vec<u8> {
    let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&4u16.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

/// Offset of `proc_event.what` in a connector datagram, and of the exit's pid and tgid.
const WHAT_AT: u32 = (NLMSG_HDRLEN + CN_MSG_LEN) as u32;
const EXIT_PID_AT: u32 = WHAT_AT + 16;
const EXIT_TGID_AT: u32 = WHAT_AT + 20;

/// A classic BPF socket filter that keeps a datagram (the connector sends one event per
/// datagram) only if it is the exit of process `pid`. BPF word loads read big-endian; the
/// event's fields are native, so the constants are compared in the loaded byte order.
fn exit_filter(pid: i32) -> Vec<libc::sock_filter> {
    let as_loaded = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
    let ld = |at: u32| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: at,
    };
    // On a mismatch jump to the final "drop", `to_drop` instructions ahead of the next one.
    let jeq = |k: u32, to_drop: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: to_drop,
        k,
    };
    let ret = |k: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let pid = as_loaded(pid as u32);
    vec![
        ld(WHAT_AT),
        jeq(as_loaded(PROC_EVENT_EXIT), 5),
        ld(EXIT_PID_AT),
        jeq(pid, 3),
        ld(EXIT_TGID_AT),
        jeq(pid, 1),
        ret(u32::MAX),
        ret(0),
    ]
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}

/// Parses the netlink messages of one datagram, keeping process (not thread) exits.
pub fn parse_exits(mut b: &[u8]) -> Vec<Exit> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(b, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        let msg = &b[..len];
        let ev = NLMSG_HDRLEN + CN_MSG_LEN;
        if u32_at(msg, ev) == Some(PROC_EVENT_EXIT) {
            let data = ev + 16;
            if let (Some(pid), Some(tgid), Some(code)) = (
                u32_at(msg, data),
                u32_at(msg, data + 4),
                u32_at(msg, data + 8),
            ) {
                if pid == tgid {
                    out.push(Exit {
                        pid: pid as i32,
                        status: code as i32,
                    });
                }
            }
        }
        let aligned = (len + 3) & !3;
        b = &b[aligned.min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_msg(pid: u32, tgid: u32, status: u32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN + CN_MSG_LEN + 16 + 24];
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        let ev = NLMSG_HDRLEN + CN_MSG_LEN;
        m[ev..ev + 4].copy_from_slice(&PROC_EVENT_EXIT.to_ne_bytes());
        m[ev + 16..ev + 20].copy_from_slice(&pid.to_ne_bytes());
        m[ev + 20..ev + 24].copy_from_slice(&tgid.to_ne_bytes());
        m[ev + 24..ev + 28].copy_from_slice(&status.to_ne_bytes());
        m
    }

    /// Runs the classic BPF subset `exit_filter` uses on one datagram.
    fn run_filter(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                let at = i.k as usize;
                match pkt.get(at..at + 4) {
                    Some(b) => acc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => return 0,
                }
                pc += 1;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
            } else if code == libc::BPF_RET | libc::BPF_K {
                return i.k;
            } else {
                panic!("unexpected instruction {code:#x}");
            }
        }
    }

    #[test]
    fn the_socket_filter_keeps_the_exit_of_one_process() {
        let prog = exit_filter(42);
        assert_eq!(run_filter(&prog, &exit_msg(42, 42, 9)), u32::MAX);
        // Another process, a thread of it, its fork (not an exit), a short datagram: dropped.
        assert_eq!(run_filter(&prog, &exit_msg(43, 43, 9)), 0);
        assert_eq!(run_filter(&prog, &exit_msg(43, 42, 0)), 0);
        let mut fork = exit_msg(42, 42, 0);
        let ev = NLMSG_HDRLEN + CN_MSG_LEN;
        fork[ev..ev + 4].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(run_filter(&prog, &fork), 0);
        assert_eq!(run_filter(&prog, &exit_msg(42, 42, 9)[..40]), 0);
    }

    #[test]
    fn parses_process_exits_only() {
        let mut buf = exit_msg(42, 42, 9);
        buf.extend(exit_msg(43, 42, 0));
        buf.extend(exit_msg(50, 50, 3 << 8));
        assert_eq!(
            parse_exits(&buf),
            vec![
                Exit { pid: 42, status: 9 },
                Exit {
                    pid: 50,
                    status: 3 << 8
                }
            ]
        );
        assert_eq!(parse_exits(&buf[..10]), vec![]);
        assert_eq!(listen_message().len(), 40);
    }
}
