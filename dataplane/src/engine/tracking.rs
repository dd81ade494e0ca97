//! `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT GETREDIR`,
//! `CLIENT TRACKINGINFO`: client-side caching.
//!
//! Tracking is not served: a key's invalidation comes from the Redis server
//! of its group, on the connection that read it, and keyway's request
//! connections are shared by every client of a core; serving it needs a
//! connection with tracking on per tracking client and group (or `BCAST`
//! on every group) whose invalidation pushes keyway forwards. Rather than
//! turn tracking on and miss invalidations, `CLIENT TRACKING on` is refused
//! ([`Refusal::TrackingUnsupported`]) after its options are checked as Redis
//! checks them, and the other subcommands answer truthfully for a client
//! whose tracking is off, as Redis answers such a client: `CLIENT TRACKING
//! off` is `+OK`, `CLIENT CACHING` is Redis's error, `CLIENT GETREDIR` is
//! `-1`, `CLIENT TRACKINGINFO` is `flags: [off], redirect: -1, prefixes: []`
//! (a map in RESP3).

use keyway_protocol::resp::{encode, Args};

use super::client::ClientState;
use super::replies::Refusal;

/// The tracking subcommands of `CLIENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingCmd {
    /// `CLIENT TRACKING on|off [option …]`.
    Tracking,
    /// `CLIENT CACHING yes|no`.
    Caching,
    /// `CLIENT GETREDIR`.
    GetRedir,
    /// `CLIENT TRACKINGINFO`.
    Info,
}

/// Answers a tracking subcommand; arity has been checked.
pub(super) fn run(cmd: TrackingCmd, st: &mut ClientState, args: &Args<'_>) {
    let r3 = st.resp3;
    match cmd {
        TrackingCmd::Tracking => tracking(st, args),
        TrackingCmd::Caching => st.refuse(&Refusal::CachingWithoutTracking),
        TrackingCmd::GetRedir => st.reply(|o| encode::integer(o, -1)),
        TrackingCmd::Info => st.reply(|o| {
            encode::map_header(o, 3, r3);
            encode::bulk(o, b"flags");
            encode::set_header(o, 1, r3);
            encode::bulk(o, b"off");
            encode::bulk(o, b"redirect");
            encode::integer(o, -1);
            encode::bulk(o, b"prefixes");
            encode::array_header(o, 0);
        }),
    }
}

/// `CLIENT TRACKING on|off [REDIRECT id] [BCAST] [PREFIX p] [OPTIN]
/// [OPTOUT] [NOLOOP]`: the options checked in Redis's order, then `off` is
/// `+OK` (tracking is off) and `on` refused.
fn tracking(st: &mut ClientState, args: &Args<'_>) {
    let mut j = 3;
    let mut redirect = false;
    while j < args.len() {
        let opt = args.get(j);
        let more = j + 1 < args.len();
        if opt.eq_ignore_ascii_case(b"redirect") && more {
            j += 1;
            if redirect {
                return st.refuse(&Refusal::TrackingRedirectTwice);
            }
            redirect = true;
            let id = std::str::from_utf8(args.get(j))
                .ok()
                .and_then(|s| s.parse::<i64>().ok());
            if id.is_none() {
                return st.refuse(&Refusal::NotAnInteger);
            }
        } else if opt.eq_ignore_ascii_case(b"prefix") && more {
            j += 1;
        } else if !["bcast", "optin", "optout", "noloop"]
            .iter()
            .any(|o| opt.eq_ignore_ascii_case(o.as_bytes()))
        {
            return st.refuse(&Refusal::Syntax);
        }
        j += 1;
    }
    let mode = args.get(2);
    if mode.eq_ignore_ascii_case(b"on") {
        st.refuse(&Refusal::TrackingUnsupported)
    } else if mode.eq_ignore_ascii_case(b"off") {
        st.reply(|o| encode::simple(o, b"OK"))
    } else {
        st.refuse(&Refusal::Syntax)
    }
}
