//! Chooses a partition for a record key: Kafka's murmur2, so keys land where a Kafka
//! producer with the default partitioner would put them.
//!
//! The hash is part of the data layout: records with one key stay in order only while it
//! maps them to one partition, so it must never change across runs, versions or platforms.

/// The partition for `key` among `partitions` (which is at least 1):
/// `(murmur2(key) & 0x7fff_ffff) % partitions`, as Kafka's `Utils.toPositive` does.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// MurmurHash2, 32 bit, seed `0x9747b28c`, little-endian blocks: bit for bit Kafka's
/// `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Kafka hashes an int length; keys are far below 2^32 bytes.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests;

/// FNV-1a 64 of `bytes`, then splitmix64's mixer: a hash that is the same on every
/// machine, build and version (unlike the standard library's hasher). The embedded log's
/// transaction journal labels producers with it (on disk: it must never change) and a
/// fleet scores members for units with it (every node must agree).
pub fn stable_hash(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}
