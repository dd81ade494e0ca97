//! Data-plane sessions (the schema in `capnp/schema/control.capnp` describes
//! the protocol). One task per session: a reader task decodes frames into a
//! channel (so the main loop's `select!` never cancels a half-read frame), and
//! the main loop answers acks with heartbeats and pushes every new snapshot of
//! the cluster.

use std::net::SocketAddr;
use std::time::Duration;

use keyway_capnp::control::{FromDataPlane, Heartbeat, ToDataPlane};
use keyway_capnp::frame::{check_len, frame, MAX_FRAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::daemon::Shared;

/// How long a new session may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts data-plane sessions forever.
pub async fn serve(listener: TcpListener, ctld: Shared) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let ctld = ctld.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(sock, peer, ctld).await {
                        tracing::debug!(%peer, "control session ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_message(r: &mut OwnedReadHalf) -> anyhow::Result<FromDataPlane> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = check_len(header, MAX_FRAME)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(FromDataPlane::decode(&buf)?)
}

async fn send(w: &mut OwnedWriteHalf, m: &ToDataPlane) -> std::io::Result<()> {
    w.write_all(&frame(&m.encode())).await
}

async fn session(sock: TcpStream, peer: SocketAddr, ctld: Shared) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let (mut r, mut w) = sock.into_split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut r)).await?? {
        FromDataPlane::Hello(h) => h,
        FromDataPlane::Ack(_) => {
            send(
                &mut w,
                &ToDataPlane::Refused("a session starts with Hello".into()),
            )
            .await?;
            anyhow::bail!("{peer}: ack before hello");
        }
    };
    if hello.id.is_empty() {
        send(&mut w, &ToDataPlane::Refused("Hello without an id".into())).await?;
        anyhow::bail!("{peer}: hello without an id");
    }
    let Some(mut snapshots) = ctld.subscribe(&hello.cluster) else {
        send(
            &mut w,
            &ToDataPlane::Refused(format!("no cluster {:?}", hello.cluster)),
        )
        .await?;
        anyhow::bail!("{peer}: no cluster {:?}", hello.cluster);
    };
    let session = ctld.hello(&hello);
    let result = async {
        let current = snapshots.borrow_and_update().clone();
        let Some(current) = current else { anyhow::bail!("cluster deleted") };
        let mut lease = Duration::from_millis(current.lease_millis);
        let mut version = current.version;
        if hello.version != current.version {
            send(&mut w, &ToDataPlane::Snapshot((*current).clone())).await?;
        }
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                let m = read_message(&mut r).await;
                let stop = m.is_err();
                if tx.send(m).await.is_err() || stop {
                    return;
                }
            }
        });
        // A data plane asks for a lease every third of it; silence for a
        // whole lease means it is gone.
        let outcome = loop {
            tokio::select! {
                m = tokio::time::timeout(lease, rx.recv()) => {
                    let m = match m {
                        Err(_) => break Err(anyhow::anyhow!("no message for {lease:?}")),
                        Ok(None) => break Ok(()),
                        Ok(Some(m)) => m,
                    };
                    match m {
                        Ok(FromDataPlane::Ack(a)) => {
                            ctld.ack(&hello.id, session, &a, lease);
                            let hb = Heartbeat { seq: a.seq, lease_millis: lease.as_millis() as u64, version };
                            send(&mut w, &ToDataPlane::Heartbeat(hb)).await?;
                        }
                        Ok(FromDataPlane::Hello(_)) => break Err(anyhow::anyhow!("a second hello")),
                        Err(e) => break Err(e),
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    let next = snapshots.borrow_and_update().clone();
                    match next {
                        Some(s) => {
                            lease = Duration::from_millis(s.lease_millis);
                            version = s.version;
                            send(&mut w, &ToDataPlane::Snapshot((*s).clone())).await?;
                        }
                        None => {
                            send(&mut w, &ToDataPlane::Refused(format!("cluster {:?} was deleted", hello.cluster))).await?;
                            break Ok(());
                        }
                    }
                }
            }
        };
        reader.abort();
        outcome
    }
    .await;
    ctld.disconnected(&hello.id, session);
    result
}
