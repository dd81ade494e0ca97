# The control session between a data plane and keyway-ctld. The data plane
# dials ctld (so appliances need no inbound control port) and the two exchange
# length-prefixed messages (see capnp/src/frame.rs):
#
#   data plane -> ctld: Hello once, then Ack whenever it has applied a new
#                       snapshot and every lease-third as a lease request.
#   ctld -> data plane: Snapshot when the data plane's version is not the
#                       cluster's; a Heartbeat answering every Ack, which
#                       renews the lease; Refused when it cannot serve it,
#                       and then ctld closes the session.
#
# ctld refuses a Hello with a wrong token, or whose id, cluster or address is
# malformed or too long, and an Ack for a version newer than the cluster's
# (no data plane can have applied it). Frames from a data plane are at most
# 64 KiB; the Hello must come within a few seconds of connecting.
#
# A data plane's lease runs from the moment it *sent* the Ack a Heartbeat
# answers, so it always ends before ctld's view of it (which runs from the
# Heartbeat's sending). A data plane whose lease ends fences itself.
#
# Evolution rules: as in snapshot.capnp.

@0xe39175810a340672;

using Snap = import "snapshot.capnp";

struct FromDataPlane {
  union {
    hello @0 :Hello;
    ack @1 :Ack;
  }
}

struct ToDataPlane {
  union {
    snapshot @0 :Snap.Snapshot;
    heartbeat @1 :Heartbeat;
    refused @2 :Text;
    # Why ctld will not serve this data plane (e.g. no such cluster); the
    # data plane keeps retrying. A ctld standing by (etcd mode, not the
    # elected one) refuses every Hello with a text starting "standby"; a
    # data plane given several ctld addresses then tries the next one.
  }
}

struct Hello {
  id @0 :Text;
  # Unique per data plane; stable across its restarts.

  cluster @1 :Text;
  version @2 :UInt64;
  # The snapshot version it serves now (0: none).

  address @3 :Text;
  # Where its clients connect, for listings.

  token @4 :Text;
  # The shared secret ctld was started with (`keyway-ctld --token-file`;
  # `keyway --control-token-file`). Empty, as every data plane before it
  # sent: no token, which only a ctld without one (on loopback) accepts.
  # A wrong or missing token is answered `Refused("authentication failed")`
  # and nothing of the Hello is recorded. Never logged or echoed.

  admin @5 :Text;
  # Added in version 6: where its admin HTTP endpoint listens (host:port,
  # `/metrics`, `/healthz`, `/table`), for `keywayctl top` and listings;
  # empty when it has none (and in earlier versions' messages).

  adminTls @6 :Bool;
  # Added in version 6: the admin endpoint speaks HTTPS (`[tls] admin`).
}

struct Ack {
  version @0 :UInt64;
  # The newest snapshot version every core has loaded.

  drained @1 :Bool;
  # True when no request routed under an older version is in flight.

  seq @2 :UInt64;
  # Echoed by the Heartbeat that answers this Ack.

  fenced @3 :Bool;
  # The data plane is refusing requests: its lease ended.

  backends @4 :List(BackendReport);
  # Added in version 4: how this data plane fares with each backend it
  # used (masters and replicas of its current snapshot), for ctld's failure
  # detection: a master is failed over only when most data planes that
  # report on it fail it too. A data plane sends an Ack (with its reports)
  # as soon as a backend goes from up to failing or back, besides the
  # lease-third ones.
}

struct BackendReport {
  address @0 :Text;
  # host:port, as the snapshot names the server.

  failures @1 :UInt32;
  # Consecutive failed attempts (connect, or a request that got no reply)
  # since the last success; 0 when the last attempt succeeded.

  lastError @2 :Text;
  # The last failure's reason; empty if none.

  sinceSuccessMillis @3 :UInt64 = 0xffffffffffffffff;
  # Milliseconds since the last success (a reply), as of sending;
  # all ones if there was none.

  sinceFailureMillis @4 :UInt64 = 0xffffffffffffffff;
  # Milliseconds since the last failure, as of sending; all ones if none.
}

struct Heartbeat {
  seq @0 :UInt64;
  # The Ack this answers.

  leaseMillis @1 :UInt64;
  # The lease granted, counted from when that Ack was sent.

  version @2 :UInt64;
  # The cluster's current version.
}
