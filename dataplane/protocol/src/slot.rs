//! Hash slots: CRC16/XMODEM of the key, or of its `{hash tag}`, modulo the slot
//! count, exactly as Redis Cluster computes `CLUSTER KEYSLOT` (for 16384 slots).

/// The default slot count, identical to Redis Cluster's.
pub const DEFAULT_SLOTS: u32 = 16384;

/// The largest slot count a cluster may have (CRC16 gives 16 bits; more slots than
/// Redis Cluster's would only spread keys thinner than any operator moves them).
pub const MAX_SLOTS: u32 = 16384;

/// The CRC16/XMODEM engine, slicing 16 bytes per step (a byte-at-a-time table
/// walk is a dependency chain of table loads; keys are usually 10 to 40 bytes).
static XMODEM: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    XMODEM.checksum(data)
}

/// The part of `key` that is hashed: the bytes between the first `{` and the first
/// `}` after it, when that is non-empty; otherwise the whole key.
#[inline]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    // Most keys are short: a byte loop finds `{` sooner than `memchr`'s
    // set-up for a vector search.
    let open = if key.len() <= 32 {
        key.iter().position(|&b| b == b'{')
    } else {
        memchr::memchr(b'{', key)
    };
    if let Some(open) = open {
        let rest = &key[open + 1..];
        if let Some(close) = memchr::memchr(b'}', rest) {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The slot of `key` among `slot_count` slots. `slot_count` must be a power of two.
#[inline]
pub fn key_slot(key: &[u8], slot_count: u32) -> u32 {
    debug_assert!(slot_count.is_power_of_two());
    u32::from(crc16(hash_tag(key))) & (slot_count - 1)
}

/// Whether `n` is an acceptable slot count: a power of two from 1 to [`MAX_SLOTS`].
pub fn valid_slot_count(n: u32) -> bool {
    n.is_power_of_two() && n <= MAX_SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_golden_vector() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn hash_tags_follow_redis_cluster_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"{user1000}.followers"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo"), b"foo");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"{}"), b"{}");
        // Past the byte loop's 32 bytes, memchr finds the same.
        let long = [vec![b'x'; 40], b"{t}".to_vec()].concat();
        assert_eq!(hash_tag(&long), b"t");
        let edge = [vec![b'x'; 31], b"{t}".to_vec()].concat();
        assert_eq!(hash_tag(&edge), b"t");
        assert_eq!(hash_tag(b"{a}"), b"a");
    }

    /// Values from `CLUSTER KEYSLOT` on a real Redis 7.0.
    #[test]
    fn slots_match_cluster_keyslot() {
        assert_eq!(key_slot(b"foo", 16384), 12182);
        assert_eq!(key_slot(b"bar", 16384), 5061);
        assert_eq!(key_slot(b"123456789", 16384), 0x31C3);
        assert_eq!(
            key_slot(b"{user1000}.following", 16384),
            key_slot(b"user1000", 16384)
        );
        assert_eq!(key_slot(b"foo{}{bar}", 16384), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap", 16384), 4015);
        assert_eq!(key_slot(b"foo{bar}{zap}", 16384), 5061);
        assert_eq!(key_slot(b"", 16384), 0);
    }

    #[test]
    fn smaller_slot_counts_mask_the_crc() {
        assert_eq!(key_slot(b"foo", 1024), 12182 & 1023);
        assert_eq!(key_slot(b"foo", 1), 0);
    }

    #[test]
    fn slot_count_validation() {
        assert!(valid_slot_count(16384));
        assert!(valid_slot_count(1024));
        assert!(valid_slot_count(1));
        assert!(!valid_slot_count(0));
        assert!(!valid_slot_count(1000));
        assert!(!valid_slot_count(32768));
    }
}
