//! Client authentication and ACL checks, before anything is sent.
//!
//! - A client starts as the `default` user, authenticated when that user
//!   needs no password (Redis's `client->authenticated`). `AUTH [user]
//!   pass` and `HELLO … AUTH user pass` ([`Ctx::authenticate`]) switch its
//!   user; a failure answers `-WRONGPASS`, is logged (user and address,
//!   never the password), goes to `ACL LOG`, and counts against the
//!   client's address ([`AuthFailures`], keyed by [`FailureKey`]: an IPv4
//!   address, or an IPv6 address's /64 prefix, since one host is given a
//!   whole /64 and may pick any address in it): past `auth.max_failures`
//!   within `auth.failure_window`, that address's attempts are refused
//!   unchecked until the window ends.
//! - `ClientState::acl_free` is the one test per request: true when the
//!   client needs no check at all. Otherwise [`Ctx::acl_refusal`] answers
//!   `-NOAUTH` before authentication (but for `no-auth` commands), then
//!   checks the user's rules (`acl::check`), as Redis 7.0's
//!   `processCommand` does, in the same order: after the command lookup and
//!   arity, before anything runs; in `MULTI` at queue time (the
//!   transaction then fails with `-EXECABORT`), and again at `EXEC` if the
//!   users changed meanwhile (`engine::tx_recheck`).
//! - Users are reloaded with the config ([`Worker::users_changed`]): each
//!   client's user is replaced by its new definition; clients of a user
//!   that was removed or turned `off` are disconnected, as Redis
//!   disconnects the clients of a deleted user, and so are subscribers to
//!   channels their user may no longer use.
//! - Protected mode ([`Ctx::protected`]): while the default user needs no
//!   password and `protected_mode` is on, a client from a non-loopback
//!   address gets Redis's `-DENIED` text and is closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use keyway_protocol::command::{flag, CommandSpec};
use keyway_protocol::resp::{encode, Args};

use super::acl_log::{Context, Reason};
use super::client::{ClientState, Phase};
use super::replies::Refusal;
use super::{Ctx, Worker};
use crate::acl::{Denied, User};
use crate::config::AuthSettings;

/// What failed authentications are counted per: an IPv4 address (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), or the /64 prefix
/// of an IPv6 address (one host owns a /64: counted per address, it could
/// try again from a new address each time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FailureKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl FailureKey {
    pub fn of(ip: IpAddr) -> FailureKey {
        match ip {
            IpAddr::V4(v4) => FailureKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => FailureKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&o[..8]);
                    FailureKey::V6Prefix(prefix)
                }
            },
        }
    }
}

/// Failed authentications per client address ([`FailureKey`]), across
/// cores (locked on `AUTH` only).
#[derive(Debug, Default)]
pub(crate) struct AuthFailures {
    by_ip: HashMap<FailureKey, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// When the window began (ms since the process started).
    since_ms: u64,
    count: u32,
}

impl AuthFailures {
    /// Seconds until `ip` may try again, if it is over the limit.
    pub fn blocked(&self, ip: IpAddr, now_ms: u64, a: &AuthSettings) -> Option<u64> {
        if a.max_failures == 0 {
            return None;
        }
        let f = self.by_ip.get(&FailureKey::of(ip))?;
        let ends = f.since_ms + a.failure_window.0;
        (f.count >= a.max_failures && now_ms < ends).then(|| (ends - now_ms).div_ceil(1000))
    }

    /// Counts a failure of `ip`; forgets the oldest address when
    /// `auth.tracked_addresses` are tracked.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64, a: &AuthSettings) {
        if a.max_failures == 0 {
            return;
        }
        let window = a.failure_window.0;
        let ip = FailureKey::of(ip);
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= a.tracked_addresses {
            self.by_ip.retain(|_, f| now_ms < f.since_ms + window);
            if self.by_ip.len() >= a.tracked_addresses {
                let oldest = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, f)| f.since_ms)
                    .map(|(ip, _)| *ip);
                if let Some(o) = oldest {
                    self.by_ip.remove(&o);
                }
            }
        }
        let f = self.by_ip.entry(ip).or_insert(Failures {
            since_ms: now_ms,
            count: 0,
        });
        if now_ms >= f.since_ms + window {
            *f = Failures {
                since_ms: now_ms,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }
}

/// Loopback: 127.0.0.0/8, ::1, and IPv4-mapped loopback.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether a client needs no check per request.
fn free(st: &ClientState, auth_required: bool) -> bool {
    (st.authenticated || !auth_required) && st.user.unrestricted()
}

impl Ctx {
    /// Protected mode refuses `peer` (and logs it, rate-limited).
    pub(super) fn protected(&mut self, peer: SocketAddr) -> bool {
        let cfg = &self.cfg;
        if !cfg.protected_mode || !cfg.users.default_user().nopass || is_loopback(peer.ip()) {
            return false;
        }
        self.stats.clients_rejected += 1;
        if let Some(left_out) = self.log.allow(self.now_ms) {
            tracing::warn!(
                %peer,
                earlier_lines_left_out = left_out,
                "refusing a client from a non-loopback address: protected mode is on and the \
                 default user has no password (set protected_mode = false, or give the default \
                 user a password)"
            );
        }
        true
    }

    /// Milliseconds since the process started: one clock for every core.
    fn process_ms(&self) -> u64 {
        self.shared.started.elapsed().as_millis() as u64
    }

    /// Authenticates `st` as `user` with `password` (`cmd` is the command
    /// as sent, for `ACL LOG`).
    pub(super) fn authenticate(
        &mut self,
        st: &mut ClientState,
        user: &[u8],
        password: &[u8],
        cmd: &[u8],
    ) -> Result<(), Refusal<'static>> {
        let now = self.process_ms();
        let ip = st.peer.ip();
        let settings = &self.cfg.auth;
        let blocked = match self.shared.auth_failures.lock() {
            Ok(f) => f.blocked(ip, now, settings),
            Err(_) => None,
        };
        if let Some(secs) = blocked {
            return Err(Refusal::AuthRateLimited { secs });
        }
        let found = self
            .cfg
            .users
            .get(user)
            .filter(|u| u.enabled && u.password_ok(password))
            .cloned();
        match found {
            Some(u) => {
                st.user = u;
                st.authenticated = true;
                st.acl_free = free(st, self.cfg.users.auth_required());
                Ok(())
            }
            None => {
                if let Ok(mut f) = self.shared.auth_failures.lock() {
                    f.failed(ip, now, settings);
                }
                self.stats.acl_denied_auth += 1;
                if let Some(left_out) = self.log.allow(self.now_ms) {
                    tracing::warn!(
                        client = st.id,
                        peer = %st.peer,
                        user = %String::from_utf8_lossy(&user[..user.len().min(128)]),
                        earlier_lines_left_out = left_out,
                        "authentication failed"
                    );
                }
                let object = String::from_utf8_lossy(cmd).into_owned();
                let username = String::from_utf8_lossy(user).into_owned();
                self.acl_log(st, Reason::Auth, Context::TopLevel, object, username);
                Err(Refusal::WrongPass)
            }
        }
    }

    /// `AUTH` or an `ACL` subcommand.
    pub(super) fn session_command(
        &mut self,
        cmd: super::policy::Local,
        st: &mut ClientState,
        args: &Args<'_>,
    ) {
        match cmd {
            super::policy::Local::Acl(sub) => self.acl_command(sub, st, args),
            _ => self.auth_command(st, args),
        }
    }

    /// `RESET`: back to the default user, authenticated if it needs no
    /// password (as Redis 7.0's `RESET`).
    pub(super) fn reset_user(&mut self, st: &mut ClientState) {
        let users = &self.cfg.users;
        st.user = users.default_user().clone();
        st.authenticated = !users.auth_required();
        st.acl_free = free(st, users.auth_required());
    }

    /// `AUTH [user] password`.
    pub(super) fn auth_command(&mut self, st: &mut ClientState, args: &Args<'_>) {
        let (user, password) = match args.len() {
            2 if self.cfg.users.default_user().nopass => {
                return st.refuse(&Refusal::AuthWithoutPassword)
            }
            2 => (&b"default"[..], args.get(1)),
            3 => (args.get(1), args.get(2)),
            _ => return st.refuse(&Refusal::Syntax),
        };
        match self.authenticate(st, user, password, args.get(0)) {
            Ok(()) => st.reply(|o| encode::simple(o, b"OK")),
            Err(why) => st.refuse(&why),
        }
    }

    /// The checks before `spec` runs for a client that is not `acl_free`:
    /// `-NOAUTH`, then the user's rules (a refusal is logged in `ACL
    /// LOG`).
    #[inline]
    pub(super) fn acl_refusal(
        &mut self,
        st: &mut ClientState,
        spec: &'static CommandSpec,
        args: &Args<'_>,
        in_multi: bool,
    ) -> Option<Refusal<'static>> {
        if !st.authenticated && self.cfg.users.auth_required() && !spec.has(flag::NO_AUTH) {
            return Some(Refusal::NoAuth);
        }
        match st.user.check(spec, args, &mut self.scratch.acl_keys) {
            // `SORT`'s own error, not an ACL refusal (no `ACL LOG`); only
            // `SORT` and `SORT_RO` (movable keys) are asked.
            Ok(()) if spec.has(flag::MOVABLEKEYS) => st
                .user
                .sort_option_denied(spec, args)
                .map(|option| Refusal::SortOptionDenied { option }),
            Ok(()) => None,
            Err(denied) => Some(self.acl_denied(st, spec, args, in_multi, denied)),
        }
    }

    /// A refusal by the user's rules: counted, logged in `ACL LOG`, and
    /// its error (off the request path's fast case).
    #[cold]
    #[inline(never)]
    fn acl_denied(
        &mut self,
        st: &mut ClientState,
        spec: &'static CommandSpec,
        args: &Args<'_>,
        in_multi: bool,
        denied: Denied,
    ) -> Refusal<'static> {
        match denied {
            Denied::Command | Denied::Script => self.stats.acl_denied_cmd += 1,
            Denied::Key(_) => self.stats.acl_denied_key += 1,
            Denied::Channel(_) => self.stats.acl_denied_channel += 1,
        }
        let (reason, object, why) = match denied {
            Denied::Command => (
                Reason::Command,
                spec.name.to_string(),
                Refusal::NoPermCommand { name: spec.name },
            ),
            Denied::Script => (
                Reason::Command,
                spec.name.to_string(),
                Refusal::NoPermScript { name: spec.name },
            ),
            Denied::Key(i) => (Reason::Key, lossy(args.get(i as usize)), Refusal::NoPermKey),
            Denied::Channel(i) => (
                Reason::Channel,
                lossy(args.get(i as usize)),
                Refusal::NoPermChannel,
            ),
        };
        let context = if in_multi {
            Context::Multi
        } else {
            Context::TopLevel
        };
        let username = st.user.name.to_string();
        self.acl_log(st, reason, context, object, username);
        why
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Worker {
    /// The config's users changed: every client gets its user's new
    /// definition; those whose user was removed or turned off are closed.
    pub(super) fn users_changed(&mut self) {
        let users = self.ctx.cfg.users.clone();
        let required = users.auth_required();
        let mut closed = 0u64;
        for (_, c) in self.clients.iter_mut() {
            let st = &mut c.st;
            let next: Option<Arc<User>> = users.get(st.user.name.as_bytes()).cloned();
            // As Redis's `ACLKillPubsubClientsIfNeeded`: a subscriber to
            // channels its user may no longer use goes too.
            let subscribed_ok = |u: &User| {
                st.subs
                    .as_ref()
                    .is_none_or(|s| u.all_channels || s.all_allowed(|n, p| u.channel_ok(n, p)))
            };
            match next {
                Some(u) if (u.enabled || !st.authenticated) && subscribed_ok(&u) => {
                    st.user = u;
                    st.acl_free = free(st, required);
                    // As Redis at `EXEC`: the queued commands are checked
                    // against the new rules (see `engine::tx_recheck`).
                    if let Some(tx) = st.tx.as_mut() {
                        tx.recheck = true;
                    }
                }
                _ => {
                    if st.phase == Phase::Open || st.phase == Phase::Draining {
                        if st.blocked.is_some() || st.pin.is_some() || st.tx.is_some() {
                            self.ctx.client_leaving(st);
                        }
                        st.phase = Phase::Kill;
                        self.ctx.wake.client(st);
                        closed += 1;
                    }
                }
            }
        }
        if closed > 0 {
            tracing::info!(
                core = self.ctx.core,
                clients = closed,
                "closed the clients of users removed or turned off"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Millis;

    #[test]
    fn failures_are_limited_per_address_and_bounded() {
        let a = AuthSettings {
            max_failures: 2,
            failure_window: Millis(1000),
            tracked_addresses: 2,
            acllog_max_len: 1,
        };
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let mut f = AuthFailures::default();
        f.failed(ip(1), 0, &a);
        assert_eq!(f.blocked(ip(1), 10, &a), None);
        f.failed(ip(1), 10, &a);
        assert_eq!(f.blocked(ip(1), 10, &a), Some(1));
        assert_eq!(f.blocked(ip(2), 10, &a), None, "other addresses are not");
        assert_eq!(f.blocked(ip(1), 1000, &a), None, "the window ended");
        f.failed(ip(2), 20, &a);
        f.failed(ip(3), 30, &a);
        assert!(f.by_ip.len() <= 2, "bounded: {}", f.by_ip.len());
        assert!(
            !f.by_ip.contains_key(&FailureKey::of(ip(1))),
            "the oldest is forgotten"
        );
    }

    #[test]
    fn ipv6_failures_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a = AuthSettings {
            max_failures: 2,
            failure_window: Millis(1000),
            tracked_addresses: 16,
            acllog_max_len: 1,
        };
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut f = AuthFailures::default();
        f.failed(ip("2001:db8:1:2::1"), 0, &a);
        f.failed(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), 0, &a);
        assert_eq!(
            f.blocked(ip("2001:db8:1:2:abcd::9"), 10, &a),
            Some(1),
            "any address of the /64 is over the limit"
        );
        assert_eq!(
            f.blocked(ip("2001:db8:1:3::1"), 10, &a),
            None,
            "the next /64 is not"
        );
        f.failed(ip("192.0.2.7"), 0, &a);
        f.failed(ip("::ffff:192.0.2.7"), 0, &a);
        assert_eq!(
            f.blocked(ip("192.0.2.7"), 10, &a),
            Some(1),
            "an IPv4-mapped address counts as its IPv4 address"
        );
        assert_eq!(
            f.blocked(ip("192.0.2.8"), 10, &a),
            None,
            "IPv4 stays per address"
        );
        assert_eq!(f.by_ip.len(), 2, "one entry per /64 and per IPv4 address");
    }

    #[test]
    fn loopback_addresses() {
        for (ip, want) in [
            ("127.0.0.1", true),
            ("127.3.2.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("192.0.2.2", false),
            ("fd00::2", false),
            ("0.0.0.0", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_loopback(ip), want, "{ip}");
        }
    }
}
