//! A test rig that drives a [`Worker`] without I/O: the test plays the
//! transport, reads what the worker writes to each backend, feeds it the
//! replies Redis gives, and reads what each client gets. Three groups a=0,
//! b=1, c=2 on 127.0.0.1:7000-7002 and 16 slots: slot 1 as the test says,
//! every other slot on c.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Action, BackendId, ClientId, ClientStatus, Shared, Worker};
use crate::config::{BackendSettings, Limits, LiveConfig, MigrationSettings};
use crate::routing::{GroupRoute, ReadFrom, ReplicaRoute, RoutingTable, SlotRoute};

pub(crate) const SLOTS: u32 = 16;

/// A key in `slot`.
pub(crate) fn key_in(slot: u32) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| keyway_protocol::slot::key_slot(k.as_bytes(), SLOTS) == slot)
        .expect("some key hashes there")
}

/// Group `g`'s master.
pub(crate) fn addr(g: u16) -> SocketAddr {
    format!("127.0.0.1:{}", 7000 + g).parse().unwrap()
}

/// Replica `i`'s address: 127.0.0.1:7100+i.
pub(crate) fn replica_addr(i: u16) -> SocketAddr {
    format!("127.0.0.1:{}", 7100 + i).parse().unwrap()
}

/// Settings the rig's configs carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub limits: Limits,
    pub backend: BackendSettings,
    /// A group whose master did not resolve.
    pub unresolved: Option<u16>,
    /// Replicas: (group, replica number for [`replica_addr`], zone).
    pub replicas: Vec<(u16, u16, &'static str)>,
    /// Groups' read policies (others read from their master).
    pub read_from: Vec<(u16, ReadFrom)>,
    /// The data plane's zone.
    pub zone: Option<&'static str>,
    /// Client users.
    pub users: Arc<crate::acl::Users>,
    /// Backend logins.
    pub logins: Arc<crate::config::BackendAuth>,
    /// `[metrics]`.
    pub metrics: crate::config::MetricsSettings,
    /// Why the data plane is fenced, if it is.
    pub fence: Option<&'static str>,
}

fn config(version: u64, slot1: SlotRoute, held: &[u16], settings: &Settings) -> Arc<LiveConfig> {
    let groups: Box<[GroupRoute]> = (0..3u16)
        .map(|g| GroupRoute {
            name: Arc::from(["a", "b", "c"][usize::from(g)]),
            master: if settings.unresolved == Some(g) {
                Err(Arc::from("cannot resolve \"typo.invalid:6379\": not found"))
            } else {
                Ok(addr(g))
            },
            master_text: addr(g).to_string(),
            tls: None,
            replicas: settings
                .replicas
                .iter()
                .filter(|r| r.0 == g)
                .map(|&(_, i, zone)| ReplicaRoute {
                    addr: Ok(replica_addr(i)),
                    text: replica_addr(i).to_string(),
                    zone: Arc::from(zone),
                })
                .collect(),
            read_from: settings
                .read_from
                .iter()
                .find(|r| r.0 == g)
                .map_or(ReadFrom::Master, |r| r.1),
            hold: held.contains(&g),
        })
        .collect();
    let mut slots = vec![SlotRoute::Stable(2); SLOTS as usize];
    slots[1] = slot1;
    Arc::new(LiveConfig {
        table: RoutingTable::new(version, SLOTS, &slots, groups),
        fence: settings.fence.map(Arc::from),
        limits: settings.limits.clone(),
        backend: settings.backend.clone(),
        migration: MigrationSettings::default(),
        metrics: settings.metrics.clone(),
        zone: settings.zone.map(Arc::from),
        users: settings.users.clone(),
        protected_mode: true,
        auth: Default::default(),
        logins: settings.logins.clone(),
    })
}

pub(crate) struct Rig {
    source: Arc<ArcSwap<LiveConfig>>,
    pub worker: Worker,
    pub client: ClientId,
    backends: HashMap<SocketAddr, BackendId>,
    /// Pub/Sub subscriber connections, apart from the request ones.
    subscribers: HashMap<SocketAddr, BackendId>,
    start: Instant,
    pub settings: Settings,
    /// Connections to these addresses are refused.
    pub refusing: HashSet<SocketAddr>,
    /// What `take_wakeups` hands over (kept, as a driver keeps it).
    woken: (Vec<u32>, Vec<u32>),
    /// Dedicated connections (see `engine::dedicated`), in the order they
    /// were opened.
    pub dedicated: Vec<(SocketAddr, BackendId)>,
}

impl Rig {
    pub fn new(slot1: SlotRoute) -> Rig {
        Rig::with(slot1, Settings::default())
    }

    pub fn with(slot1: SlotRoute, settings: Settings) -> Rig {
        let source = Arc::new(ArcSwap::new(config(1, slot1, &[], &settings)));
        let mut worker = Worker::new(0, source.clone(), Arc::new(Shared::new(1)));
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let client = worker.accept(peer, peer).unwrap();
        Rig {
            source,
            worker,
            client,
            backends: HashMap::new(),
            subscribers: HashMap::new(),
            start: Instant::now(),
            settings,
            refusing: HashSet::new(),
            woken: (Vec::new(), Vec::new()),
            dedicated: Vec::new(),
        }
    }

    /// Sends requests (`;`-separated, arguments split on whitespace).
    pub fn send(&mut self, req: &str) {
        let mut bytes = Vec::new();
        for line in req.split(';') {
            let args: Vec<&str> = line.split_whitespace().collect();
            bytes.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                bytes.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        self.worker.client_input(self.client, &bytes);
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.worker.client_input(self.client, bytes);
    }

    /// Connects what the worker asked for (refusing the addresses in
    /// `refusing`); returns how many connections were attempted.
    pub fn connect(&mut self) -> usize {
        let mut actions = Vec::new();
        self.worker.take_actions(&mut actions);
        let n = actions.len();
        for Action::Connect { id, addr, .. } in actions {
            if self.refusing.contains(&addr) {
                self.worker
                    .backend_failed(id, "Connection refused (os error 111)");
                continue;
            }
            assert!(self.worker.backend_connected(id));
            if self.worker.is_dedicated(id) {
                self.dedicated.push((addr, id));
            } else if self.worker.is_subscriber(id) {
                self.subscribers.insert(addr, id);
            } else {
                self.backends.insert(addr, id);
            }
        }
        n
    }

    /// Connects what the worker asked for; returns what it wrote to group
    /// `g`'s backend since the last call.
    pub fn written(&mut self, g: u16) -> String {
        self.written_at(addr(g))
    }

    /// As [`written`](Self::written), for any backend address.
    pub fn written_at(&mut self, at: SocketAddr) -> String {
        self.connect();
        let Some(&id) = self.backends.get(&at) else {
            return String::new();
        };
        let out = String::from_utf8_lossy(self.worker.backend_output(id)).into_owned();
        let n = out.len();
        self.worker.backend_wrote(id, n);
        out
    }

    /// Connects what the worker asked for; returns what it wrote to group
    /// `g`'s Pub/Sub subscriber connection since the last call.
    pub fn sub_written(&mut self, g: u16) -> String {
        self.connect();
        let Some(&id) = self.subscribers.get(&addr(g)) else {
            return String::new();
        };
        let out = String::from_utf8_lossy(self.worker.backend_output(id)).into_owned();
        self.worker.backend_wrote(id, out.len());
        out
    }

    /// Feeds `bytes` from group `g`'s subscriber connection.
    pub fn sub_push(&mut self, g: u16, bytes: &str) {
        let id = self.subscribers[&addr(g)];
        self.worker.backend_input(id, bytes.as_bytes());
    }

    /// Group `g`'s subscriber connection breaks.
    pub fn sub_lose(&mut self, g: u16) {
        let id = self.subscribers[&addr(g)];
        self.worker
            .backend_failed(id, "the backend closed the connection");
    }

    /// Whether group `g`'s subscriber connection is live.
    pub fn sub_live(&self, g: u16) -> bool {
        self.subscribers
            .get(&addr(g))
            .is_some_and(|&id| self.worker.backend_live(id))
    }

    /// Connects what the worker asked for; returns how many bytes wait to be
    /// written to group `g`'s backend, without writing them.
    pub fn waiting(&mut self, g: u16) -> usize {
        self.connect();
        self.backends
            .get(&addr(g))
            .map_or(0, |&id| self.worker.backend_output(id).len())
    }

    pub fn reply(&mut self, g: u16, bytes: &str) {
        self.reply_bytes(g, bytes.as_bytes());
    }

    pub fn reply_bytes(&mut self, g: u16, bytes: &[u8]) {
        self.reply_at(addr(g), bytes);
    }

    /// Feeds `bytes` from the backend at `at`.
    pub fn reply_at(&mut self, at: SocketAddr, bytes: &[u8]) {
        let id = self.backends[&at];
        self.worker.backend_input(id, bytes);
    }

    /// The connection to `at` breaks (the server died).
    pub fn lose(&mut self, at: SocketAddr) {
        let id = self.backends[&at];
        self.worker
            .backend_failed(id, "the backend closed the connection");
    }

    /// Whether group `g`'s backend connection is still up.
    pub fn backend_live(&self, g: u16) -> bool {
        self.backends
            .get(&addr(g))
            .is_some_and(|&id| self.worker.backend_live(id))
    }

    pub fn output(&mut self) -> String {
        // As a driver does before it writes (the meters record the
        // replies that leave).
        let (mut clients, mut backends) = std::mem::take(&mut self.woken);
        self.worker.take_wakeups(&mut clients, &mut backends);
        clients.clear();
        backends.clear();
        self.woken = (clients, backends);
        let out = String::from_utf8_lossy(self.worker.client_output(self.client)).into_owned();
        self.worker.client_wrote(self.client, out.len());
        out
    }

    pub fn status(&self) -> ClientStatus {
        self.worker.client_status(self.client)
    }

    /// Publishes a table (the worker picks it up on its next call).
    pub fn publish(&mut self, version: u64, slot1: SlotRoute) {
        self.publish_held(version, slot1, &[]);
    }

    /// Publishes a table with groups `held` on hold.
    pub fn publish_held(&mut self, version: u64, slot1: SlotRoute, held: &[u16]) {
        self.source
            .store(config(version, slot1, held, &self.settings));
    }

    /// Publishes a table and ticks, so the worker applies it now.
    pub fn swap(&mut self, version: u64, slot1: SlotRoute) {
        self.publish(version, slot1);
        self.tick(0);
    }

    pub fn tick(&mut self, after_ms: u64) {
        self.worker
            .tick(self.start + Duration::from_millis(after_ms));
    }

    /// The worker's periodic step `after_ms` after the rig started, with
    /// the process stopping or not (see [`Worker::drain_step`]).
    pub fn drain_step(&mut self, after_ms: u64, stop: bool) -> super::Drain {
        self.worker
            .drain_step(self.start + Duration::from_millis(after_ms), stop)
    }

    /// Connects what the worker asked for; returns what it wrote to
    /// dedicated connection `i` (in opening order) since the last call.
    pub fn written_dedicated(&mut self, i: usize) -> String {
        self.connect();
        let Some(&(_, id)) = self.dedicated.get(i) else {
            return String::new();
        };
        let out = String::from_utf8_lossy(self.worker.backend_output(id)).into_owned();
        self.worker.backend_wrote(id, out.len());
        out
    }

    /// Feeds `bytes` from dedicated connection `i`.
    pub fn reply_dedicated(&mut self, i: usize, bytes: &str) {
        let id = self.dedicated[i].1;
        self.worker.backend_input(id, bytes.as_bytes());
    }

    pub fn another_client(&mut self) -> ClientId {
        let peer: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        self.worker.accept(peer, peer).unwrap()
    }

    pub fn send_as(&mut self, client: ClientId, req: &str) {
        let keep = self.client;
        self.client = client;
        self.send(req);
        self.client = keep;
    }

    pub fn output_of(&mut self, client: ClientId) -> String {
        let keep = self.client;
        self.client = client;
        let out = self.output();
        self.client = keep;
        out
    }
}
