//! Which partition an event goes to: FNV-1a 64 of the ordering key's UTF-8 bytes, modulo the
//! partition count. The same in every process and run (never Python's salted `hash`).

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = OFFSET;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(PRIME);
    }
    h
}

pub fn partition_of(key: &str, partitions: usize) -> usize {
    if partitions <= 1 {
        0
    } else {
        (fnv1a64(key.as_bytes()) % partitions as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fnv1a64_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        for k in ["cust-1", "cust-2", "", "ünïcode"] {
            let p = partition_of(k, 16);
            assert!(p < 16);
            assert_eq!(p, partition_of(k, 16));
        }
        assert_eq!(partition_of("anything", 1), 0);
    }
}
