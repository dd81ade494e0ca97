# The routing snapshot keyway-ctld publishes to every data plane of a cluster:
# the whole desired state a data plane routes by, under one version number.
#
# Evolution rules (Cap'n Proto's wire rules, plus ours):
#  - Never change the file ID or a struct's ID, never renumber, retype or
#    remove a field, never reuse an ordinal. Add fields only at the end, with
#    the next ordinal. A field no longer used stays, renamed `obsoleteName`.
#  - A new field's default (0, false, empty) must mean "as before": an old
#    writer's message read by a new reader gets the default, and an old reader
#    ignores the new field.
#  - Never move a field into or out of a union; add new union members at the
#    end of the union only.
#  - A change that old readers cannot accept (new meaning for an old field)
#    needs a new struct and a new field for it, never an edit in place.
#  - capnp/tests/fixtures/ keeps messages written by each released version;
#    capnp/tests/fixtures.rs decodes them. Add a fixture when adding fields.

@0xa7f12806b5c4867e;

struct Snapshot {
  cluster @0 :Text;
  # The cluster's name.

  version @1 :UInt64;
  # Increases with every change of the cluster. Data planes ack by version.

  slotCount @2 :UInt32;
  # Hash slots: a power of two up to 16384.

  groups @3 :List(Group);
  # Redis groups; slot ranges and migrations name them by index in this list.

  slotRanges @4 :List(SlotRange);
  # Owned slot ranges, ascending and disjoint. Slots in no range are unowned.

  migrations @5 :List(Migration);
  # Slot ranges being moved (their owner in slotRanges is still `from`).

  leaseMillis @6 :UInt64;
  # How long a data plane may serve this snapshot without a heartbeat.

  users @7 :List(User);
  # Added in version 5: the client users (Redis ACL users) the cluster's
  # data planes authenticate and check clients against, replacing those of
  # their own config file. Empty (and in earlier versions' messages): each
  # data plane keeps its config file's users.
}

struct User {
  # Added in version 5: one client user.

  name @0 :Text;

  rules @1 :Text;
  # Redis `ACL SETUSER` rules, space-separated; passwords only as
  # `#<sha256 hex>` / `!<sha256 hex>`, never in clear text.
}

struct Group {
  name @0 :Text;
  master @1 :Text;
  # host:port of the master.

  replicas @2 :List(Replica);

  zone @3 :Text;
  # The master's zone or rack; empty if not set.

  readFrom @4 :ReadFrom;
  # Added in version 4: where data planes send read-only commands (by the
  # command table's flags). Version 3 messages read as `master`.

  hold @5 :Bool;
  # Added in version 4: data planes hold every command for this group (its
  # slots, and key moves from or to it) and send it nowhere until a version
  # without the hold: a failover or switchover of the group is under way.
  # Held commands keep their order and wait at most the data plane's hold
  # limit, as for a blocked migration.

  tls @6 :Bool;
  # Added in version 6: data planes (and keyway-ctld) speak TLS to every
  # server of this group, with the CA, client certificate and key of their
  # own host's settings (never carried here). Earlier versions' messages
  # read as plain TCP.

  tlsServerName @7 :Text;
  # Added in version 6: the name every server's certificate must carry when
  # `tls` is set; empty: each server's own host (of its host:port).
}

enum ReadFrom {
  master @0;
  # Every command to the master.

  replica @1;
  # Read-only commands to a replica that is up (spread over them), falling
  # back to the master when none is. Replies may be stale by the
  # replication lag.

  localZone @2;
  # As `replica`, but only replicas in the data plane's own zone
  # (`keyway --zone`); the master when none of them is up, or when the data
  # plane has no zone.
}

struct Replica {
  address @0 :Text;
  # host:port.

  zone @1 :Text;
}

struct SlotRange {
  first @0 :UInt32;
  last @1 :UInt32;
  # Inclusive.

  group @2 :UInt16;
  # Index into Snapshot.groups.
}

struct Migration {
  first @0 :UInt32;
  last @1 :UInt32;
  # Inclusive slot range.

  from @2 :UInt16;
  to @3 :UInt16;
  # Indices into Snapshot.groups.

  phase @4 :MigrationPhase;
  # Added in version 2; version 1 messages read as `moving`.
}

enum MigrationPhase {
  moving @0;
  # Data planes move each key a command names from `from` to `to` (MIGRATE),
  # then send the command to `to`. Nothing is written to `from`.

  blocked @1;
  # The step before moving: data planes hold commands on these slots (sent
  # nowhere) until the next version, so that no data plane still writes to
  # `from` while another has started moving keys away from it.
}
