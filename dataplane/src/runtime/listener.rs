//! Client listeners: one SO_REUSEPORT socket per core, created together on the
//! main thread (so their order in the reuseport group is known) and handed to
//! the cores, plus the wait for a port still held by a previous process and the
//! optional CPU steering program.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::Steer;

/// Waits until nothing listens on `addr`, up to `timeout`.
///
/// A previous keyway's sockets may still be open for a moment after it exits
/// (io_uring closes them asynchronously); a new SO_REUSEPORT socket bound then
/// would join the old process's group and lose connections to it. A probe bind
/// without SO_REUSEPORT fails while any listener holds the port.
pub fn wait_until_free(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        match probe.bind(&SockAddr::from(addr)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{addr} is still in use after {}s", timeout.as_secs()),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Binds one listening socket per entry of `cpus`, all on the same address
/// (the first picks the port when `addr` has port 0). With [`Steer::Cpu`] each
/// socket is tied to its CPU and a reuseport program sends each connection to
/// the socket of the CPU that received it.
pub fn bind_group(
    addr: SocketAddr,
    cpus: &[usize],
    backlog: u32,
    steer: Steer,
) -> io::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(cpus.len());
    let mut bound = addr;
    for &cpu in cpus {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        if steer == Steer::Cpu {
            s.set_cpu_affinity(cpu)?;
        }
        s.bind(&SockAddr::from(bound))?;
        s.listen(backlog.min(i32::MAX as u32) as i32)?;
        if bound.port() == 0 {
            bound = s
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        }
        sockets.push(s);
    }
    if steer == Steer::Cpu {
        if let Some(first) = sockets.first() {
            attach_cpu_program(first, cpus)?;
        }
    }
    Ok(sockets)
}

/// The CBPF program: load the receiving CPU, return the index of the socket
/// for that CPU; for any other CPU return an out-of-range index, which makes
/// the kernel fall back to hashing.
fn cpu_program(cpus: &[usize]) -> io::Result<Vec<libc::sock_filter>> {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SKF_AD_CPU: u32 = 0xffff_f000 + 36;
    let n = cpus.len();
    if n > 255 {
        return Err(io::Error::other(
            "steer = \"cpu\" supports at most 255 cores",
        ));
    }
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut prog = vec![ins(BPF_LD_W_ABS, 0, 0, SKF_AD_CPU)];
    // The jeq at 1+i jumps to "ret i" at n+2+i: it skips (n+2+i) - (1+i) - 1 = n.
    for &cpu in cpus {
        prog.push(ins(BPF_JMP_JEQ_K, n as u8, 0, cpu as u32));
    }
    prog.push(ins(BPF_RET_K, 0, 0, u32::MAX));
    for i in 0..n {
        prog.push(ins(BPF_RET_K, 0, 0, i as u32));
    }
    Ok(prog)
}

fn attach_cpu_program(s: &Socket, cpus: &[usize]) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let prog = cpu_program(cpus)?;
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel
    // copies the program during setsockopt.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_one_port() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let socks = bind_group(addr, &[0, 0], 128, Steer::None).unwrap();
        let a = socks[0].local_addr().unwrap().as_socket().unwrap();
        let b = socks[1].local_addr().unwrap().as_socket().unwrap();
        assert_ne!(a.port(), 0);
        assert_eq!(a, b);
        // While the group listens the port is not free.
        assert!(wait_until_free(a, Duration::from_millis(100)).is_err());
        drop(socks);
        wait_until_free(a, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn steering_program_attaches() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        bind_group(addr, &[0], 128, Steer::Cpu).unwrap();
        let prog = cpu_program(&[2, 3]).unwrap();
        assert_eq!(prog.len(), 1 + 2 + 1 + 2);
        assert_eq!(prog[1].k, 2);
        assert_eq!(prog[1].jt, 2);
        assert_eq!(prog[5].k, 1);
    }
}
