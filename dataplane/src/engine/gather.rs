//! Merging a script or function command sent to every group
//! (`SCRIPT LOAD|EXISTS|FLUSH`, `FUNCTION LOAD|DELETE|FLUSH|RESTORE`).
//!
//! A [`Gather`] keeps each group's reply until all have answered, then:
//! - [`SplitKind::Same`](super::split::SplitKind::Same): every group
//!   answered the same bytes → that reply, verbatim (so a success or an
//!   error reads exactly as one Redis server's); otherwise a
//!   `-ERR keyway: <COMMAND> …` report naming the groups that failed and
//!   why, the groups where it succeeded, and what was undone there
//!   ([`Undo`]);
//! - [`SplitKind::AllOf`](super::split::SplitKind::AllOf) (`SCRIPT
//!   EXISTS`): arrays of 0/1, element `i` is 1 only where every group
//!   answered 1.

use std::sync::Arc;

use keyway_protocol::resp::{array_elements, encode, integer_reply};

use super::replies::Refusal;

/// What can be done on the groups where a command succeeded when it
/// failed on others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Nothing (a `REPLACE`, a `DELETE` or a `FLUSH` cannot be taken back;
    /// a loaded script is harmless).
    Nothing,
    /// `FUNCTION LOAD` without `REPLACE`: the library it created (its name
    /// is the success reply) is deleted again with `FUNCTION DELETE`.
    FunctionDelete,
}

/// A command to send to a group (by part number, which is the group index
/// in a fan-out) with its reply ignored: an undo.
pub(crate) type UndoCmd = (u16, Vec<u8>);

/// The replies of a command sent to every group; see the module docs.
#[derive(Debug)]
pub(crate) struct Gather {
    /// The command as a report names it (`FUNCTION LOAD`).
    command: Box<str>,
    /// Each part's group name.
    names: Box<[Arc<str>]>,
    replies: Box<[Option<Vec<u8>>]>,
    undo: Undo,
}

/// An error reply's text: no leading `-`, no line end.
fn error_text(reply: &[u8]) -> String {
    let body = reply.strip_prefix(b"-").unwrap_or(reply);
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    String::from_utf8_lossy(&body[..body.len().min(200)]).replace(['\r', '\n'], " ")
}

/// A bulk string reply's content (`$3\r\nlib\r\n` → `lib`).
fn bulk_content(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    rest.get(nl + 2..nl + 2 + len)
}

impl Gather {
    /// A gather of one reply per group in `names` (part `i` is group `i`).
    pub fn new(command: &str, names: Box<[Arc<str>]>, undo: Undo) -> Gather {
        let replies = vec![None; names.len()].into_boxed_slice();
        Gather {
            command: command.into(),
            names,
            replies,
            undo,
        }
    }

    /// Records part `part`'s reply.
    pub fn add(&mut self, part: u16, reply: &[u8]) {
        if let Some(r) = self.replies.get_mut(usize::from(part)) {
            *r = Some(reply.to_vec());
        }
    }

    /// The merged reply (once every part has replied), and what to send to
    /// undo a partial success.
    pub fn finish(self, all_of: bool, out: &mut Vec<u8>) -> Vec<UndoCmd> {
        let replies: Vec<&[u8]> = self
            .replies
            .iter()
            .map(|r| r.as_deref().unwrap_or(b"-ERR no reply\r\n"))
            .collect();
        let Some(&first) = replies.first() else {
            encode::error(out, "ERR keyway: no group to send the command to");
            return Vec::new();
        };
        let failed = |r: &&[u8]| r.first() == Some(&b'-');
        if replies.iter().all(|r| *r == first) {
            out.extend_from_slice(first);
            return Vec::new();
        }
        if all_of && !replies.iter().any(failed) {
            if let Some(merged) = all_of_arrays(&replies) {
                encode::array_header(out, merged.len());
                for v in merged {
                    encode::integer(out, i64::from(v));
                }
            } else {
                let why = Refusal::UnexpectedPartReply { reply: first };
                out.extend_from_slice(&why.to_reply());
            }
            return Vec::new();
        }
        self.report(&replies, out)
    }

    /// The report of groups that disagree; undoes what it can.
    fn report(&self, replies: &[&[u8]], out: &mut Vec<u8>) -> Vec<UndoCmd> {
        let is_err = |r: &[u8]| r.first() == Some(&b'-');
        let mut failed = Vec::new();
        let mut ok = Vec::new();
        for (i, r) in replies.iter().enumerate() {
            let name = &*self.names[i];
            if is_err(r) {
                failed.push(format!("{name} ({})", error_text(r)));
            } else {
                ok.push((i, name));
            }
        }
        let mut undo = Vec::new();
        let mut text = String::new();
        if failed.is_empty() {
            let each: Vec<String> = replies
                .iter()
                .enumerate()
                .map(|(i, r)| format!("{}: {}", self.names[i], error_text(r)))
                .collect();
            text.push_str(&format!("groups answered differently: {}", each.join(", ")));
        } else {
            text.push_str(&format!("failed on group(s) {}", failed.join(", ")));
            if ok.is_empty() {
                text.push_str("; it succeeded nowhere");
            } else {
                let names: Vec<&str> = ok.iter().map(|(_, n)| *n).collect();
                text.push_str(&format!("; it succeeded on {}", names.join(", ")));
                match self.undo {
                    Undo::FunctionDelete => {
                        let mut undone = Vec::new();
                        for &(i, name) in &ok {
                            if let Some(lib) = bulk_content(replies[i]) {
                                let mut cmd = Vec::new();
                                encode::array_header(&mut cmd, 3);
                                encode::bulk(&mut cmd, b"FUNCTION");
                                encode::bulk(&mut cmd, b"DELETE");
                                encode::bulk(&mut cmd, lib);
                                undo.push((i as u16, cmd));
                                undone.push(format!(
                                    "{name} (FUNCTION DELETE {})",
                                    String::from_utf8_lossy(lib)
                                ));
                            }
                        }
                        text.push_str(&format!(", undone on {}", undone.join(", ")));
                    }
                    Undo::Nothing => text.push_str(", where it was not undone"),
                }
            }
        }
        let why = Refusal::GroupsDisagree {
            command: &self.command,
            report: &text,
        };
        out.extend_from_slice(&why.to_reply());
        undo
    }
}

/// `SCRIPT EXISTS` replies (arrays of integers, one length) combined: 1
/// where every array has 1.
fn all_of_arrays(replies: &[&[u8]]) -> Option<Vec<u8>> {
    let mut merged: Option<Vec<u8>> = None;
    for r in replies {
        let els = array_elements(r)?;
        let vals: Vec<u8> = els
            .map(|e| integer_reply(e).map(|n| u8::from(n != 0)))
            .collect::<Option<_>>()?;
        merged = Some(match merged {
            None => vals,
            Some(m) if m.len() == vals.len() => m.iter().zip(&vals).map(|(a, b)| a & b).collect(),
            Some(_) => return None,
        });
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Box<[Arc<str>]> {
        (0..n).map(|i| Arc::from(format!("g{i}"))).collect()
    }

    fn run(g: Gather, all_of: bool, replies: &[&[u8]]) -> (String, Vec<UndoCmd>) {
        let mut g = g;
        for (i, r) in replies.iter().enumerate().rev() {
            g.add(i as u16, r);
        }
        let mut out = Vec::new();
        let undo = g.finish(all_of, &mut out);
        (String::from_utf8(out).unwrap(), undo)
    }

    #[test]
    fn identical_replies_pass_verbatim() {
        let sha = b"$40\r\ne0e1f9fabfc9d4800c877a703b823ac0578ff8db\r\n";
        let (out, undo) = run(
            Gather::new("SCRIPT LOAD", names(3), Undo::Nothing),
            false,
            &[sha, sha, sha],
        );
        assert_eq!(out.as_bytes(), sha);
        assert!(undo.is_empty());
        let err = b"-ERR Library 'lib' already exists\r\n";
        let (out, undo) = run(
            Gather::new("FUNCTION LOAD", names(2), Undo::FunctionDelete),
            false,
            &[err, err],
        );
        assert_eq!(
            out.as_bytes(),
            err,
            "the same error everywhere reads as Redis's"
        );
        assert!(undo.is_empty());
    }

    #[test]
    fn a_partial_function_load_is_undone_and_reported() {
        let (out, undo) = run(
            Gather::new("FUNCTION LOAD", names(3), Undo::FunctionDelete),
            false,
            &[
                b"$3\r\nlib\r\n",
                b"-ERR Library 'lib' already exists\r\n",
                b"$3\r\nlib\r\n",
            ],
        );
        assert_eq!(
            out,
            "-ERR keyway: FUNCTION LOAD failed on group(s) g1 (ERR Library 'lib' already exists); \
             it succeeded on g0, g2, undone on g0 (FUNCTION DELETE lib), g2 (FUNCTION DELETE lib)\r\n"
        );
        let del = b"*3\r\n$8\r\nFUNCTION\r\n$6\r\nDELETE\r\n$3\r\nlib\r\n".to_vec();
        assert_eq!(undo, vec![(0, del.clone()), (2, del)]);
    }

    #[test]
    fn what_cannot_be_undone_is_said() {
        let (out, undo) = run(
            Gather::new("FUNCTION FLUSH", names(2), Undo::Nothing),
            false,
            &[b"+OK\r\n", b"-ERR backend g1 unavailable: refused\r\n"],
        );
        assert!(out.starts_with("-ERR keyway: FUNCTION FLUSH failed on group(s) g1 (ERR backend g1 unavailable: refused); it succeeded on g0, where it was not undone"), "{out}");
        assert!(undo.is_empty());
        let (out, _) = run(
            Gather::new("FUNCTION RESTORE", names(2), Undo::Nothing),
            false,
            &[b"-ERR a\r\n", b"-ERR b\r\n"],
        );
        assert!(
            out.contains("g0 (ERR a), g1 (ERR b); it succeeded nowhere"),
            "{out}"
        );
    }

    #[test]
    fn script_exists_is_true_only_where_every_group_has_it() {
        let (out, _) = run(
            Gather::new("SCRIPT EXISTS", names(3), Undo::Nothing),
            true,
            &[
                b"*3\r\n:1\r\n:1\r\n:0\r\n",
                b"*3\r\n:1\r\n:0\r\n:0\r\n",
                b"*3\r\n:1\r\n:1\r\n:1\r\n",
            ],
        );
        assert_eq!(out, "*3\r\n:1\r\n:0\r\n:0\r\n");
        let (out, _) = run(
            Gather::new("SCRIPT EXISTS", names(2), Undo::Nothing),
            true,
            &[b"*1\r\n:1\r\n", b"*2\r\n:1\r\n:1\r\n"],
        );
        assert!(out.starts_with("-ERR unexpected reply"), "{out}");
    }
}
