//! A transaction's commands are checked again at `EXEC` when the users
//! changed since `MULTI` (a `SIGHUP` reload, a snapshot's users), as Redis
//! 7.0's `execCommand` checks every queued command's ACL permissions again.
//!
//! Redis runs the transaction with each command no longer allowed replaced
//! by an error in its slot of `EXEC`'s reply (`-NOPERM ACLs rules changed
//! between the moment the transaction was accumulated and the EXEC call. …`)
//! and logs it in `ACL LOG` (context `multi`); the other commands run. keyway
//! sends the block at `EXEC` (see `stateful.rs`), so it replaces each such
//! command's frame in the block with a call that makes Redis answer that
//! error in that slot, and nothing else: `EVAL "return
//! redis.error_reply(ARGV[1])" 0 <error text>` (the restricted backend user
//! may run `EVAL`; the script reads and writes nothing). `EXEC`'s reply then
//! comes from Redis, element for element as Redis would answer it, with no
//! reply rewritten by keyway.
//!
//! The same frame stands in for a `SORT … BY|GET` the user may not run
//! (Redis checks those options when `SORT` runs, so it queues the command
//! and answers `-ERR BY option of SORT denied …` in its slot of `EXEC`'s
//! reply): such a `SORT` is queued as it is and marks its transaction to
//! be checked here, so that it is replaced at `EXEC` by the error its
//! user's rules give then (`SORT`'s own, or `-NOPERM` if the user lost
//! `SORT` meanwhile). Every queued frame is checked, a client's own call of
//! the error script too: Redis refuses it if the user lost `EVAL`.
//!
//! Only a transaction open while the users changed, or with such a `SORT`,
//! is checked again ([`Tx::recheck`](super::stateful::Tx)): the request
//! path of every other `EXEC` is unchanged.

use keyway_protocol::command::{self, flag, Lookup};
use keyway_protocol::resp::{encode, Frame, RequestParser};

use super::acl_log::{Context, Reason};
use super::client::ClientState;
use super::replies::Refusal;
use super::stateful::{trusted_limits, Tx};
use super::Ctx;
use crate::acl::Denied;

/// The script that answers its argument as an error reply.
const ERROR_SCRIPT: &[u8] = b"return redis.error_reply(ARGV[1])";

/// Redis 7.0's reason for a command refused at `EXEC` (`execCommand`).
fn reason(denied: Denied) -> &'static str {
    match denied {
        Denied::Command | Denied::Script => "no permission to execute the command or subcommand",
        Denied::Key(_) => "no permission to touch the specified keys",
        Denied::Channel(_) => "no permission to access one of the channels used as arguments",
    }
}

/// Appends the frame of a command that makes Redis answer `error` (an error
/// text without its `-`) in its place.
fn error_frame(out: &mut Vec<u8>, error: &str) {
    encode::array_header(out, 4);
    encode::bulk(out, b"EVAL");
    encode::bulk(out, ERROR_SCRIPT);
    encode::bulk(out, b"0");
    encode::bulk(out, error.as_bytes());
}

impl Ctx {
    /// Checks `tx`'s queued commands against `st`'s user's rules as they are
    /// now, replacing each refused one with [`error_frame`] and logging it
    /// in `ACL LOG` as Redis does.
    pub(super) fn recheck_tx(&mut self, st: &mut ClientState, tx: &mut Tx) {
        if st.acl_free {
            return;
        }
        let user = st.user.clone();
        let frames = std::mem::take(&mut tx.frames);
        let mut out = Vec::with_capacity(frames.len());
        let mut parser = RequestParser::new(trusted_limits());
        let mut rest = &frames[..];
        while !rest.is_empty() {
            let len = match parser.parse(rest) {
                Ok(Some(Frame::Multibulk { len })) => len,
                // keyway queued these frames whole; anything else is kept
                // as it is (it was allowed when queued).
                _ => {
                    out.extend_from_slice(rest);
                    break;
                }
            };
            let args = parser.args(rest);
            let spec = match command::lookup(args.get(0), args.try_get(1)) {
                Lookup::Found(s) => s,
                _ => {
                    out.extend_from_slice(&rest[..len]);
                    rest = &rest[len..];
                    continue;
                }
            };
            match user.check(spec, &args, &mut self.scratch.acl_keys) {
                Ok(()) if spec.has(flag::MOVABLEKEYS) => {
                    match user.sort_option_denied(spec, &args) {
                        Some(option) => {
                            let why = Refusal::SortOptionDenied { option };
                            error_frame(&mut out, &why.to_string());
                        }
                        None => out.extend_from_slice(&rest[..len]),
                    }
                }
                Ok(()) => out.extend_from_slice(&rest[..len]),
                Err(denied) => {
                    self.log_denied_at_exec(st, spec.name, &args, denied);
                    let why = Refusal::NoPermAtExec {
                        reason: reason(denied),
                    };
                    error_frame(&mut out, &why.to_string());
                }
            }
            rest = &rest[len..];
        }
        tx.frames = out;
    }

    /// Counts and logs (`ACL LOG`, context `multi`) a command refused at
    /// `EXEC`.
    fn log_denied_at_exec(
        &mut self,
        st: &ClientState,
        name: &str,
        args: &keyway_protocol::resp::Args<'_>,
        denied: Denied,
    ) {
        let lossy = |i: u32| String::from_utf8_lossy(args.get(i as usize)).into_owned();
        let (reason, object) = match denied {
            Denied::Command | Denied::Script => {
                self.stats.acl_denied_cmd += 1;
                (Reason::Command, name.to_string())
            }
            Denied::Key(i) => {
                self.stats.acl_denied_key += 1;
                (Reason::Key, lossy(i))
            }
            Denied::Channel(i) => {
                self.stats.acl_denied_channel += 1;
                (Reason::Channel, lossy(i))
            }
        };
        let username = st.user.name.to_string();
        self.acl_log(st, reason, Context::Multi, object, username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_frame_is_one_eval_request() {
        let mut out = Vec::new();
        error_frame(&mut out, "NOPERM x");
        let mut p = RequestParser::new(trusted_limits());
        let Ok(Some(Frame::Multibulk { len })) = p.parse(&out) else {
            panic!("not a request")
        };
        assert_eq!(len, out.len());
        let args = p.args(&out);
        assert_eq!(args.get(0), b"EVAL");
        assert_eq!(args.get(2), b"0", "no keys: it runs on any group");
        assert_eq!(args.get(1), ERROR_SCRIPT);
        assert_eq!(args.get(3), b"NOPERM x");
    }
}
