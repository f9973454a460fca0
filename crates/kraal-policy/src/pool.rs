//! Blocks of ports for `auto:<count>` from the node's pool: the lowest run of free ports
//! that overlaps nothing already given out (other pods' blocks, the host's own ephemeral
//! range). Pure: the caller says what is taken.

use crate::ports::PortRange;

/// The lowest block of `count` consecutive ports inside `pool` that overlaps none of
/// `unavailable`, or `None` when no gap is large enough.
pub fn allocate_block(pool: PortRange, count: u16, unavailable: &[PortRange]) -> Option<PortRange> {
    if count == 0 {
        return None;
    }
    let need = u32::from(count);
    let mut taken: Vec<&PortRange> = unavailable.iter().filter(|r| r.overlaps(&pool)).collect();
    taken.sort_by_key(|r| r.start());
    // The first port not yet ruled out, as u32 so that 65535 + 1 does not wrap.
    let mut cursor = u32::from(pool.start());
    for range in taken {
        let start = u32::from(range.start());
        if start.saturating_sub(cursor) >= need {
            break;
        }
        cursor = cursor.max(u32::from(range.end()).saturating_add(1));
    }
    let last = cursor.checked_add(need)?.checked_sub(1)?;
    if last > u32::from(pool.end()) {
        return None;
    }
    PortRange::new(u16::try_from(cursor).ok()?, u16::try_from(last).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u16, end: u16) -> PortRange {
        PortRange::new(start, end).unwrap()
    }

    #[test]
    fn the_first_block_starts_at_the_pool() {
        assert_eq!(
            allocate_block(r(20000, 29999), 1000, &[]),
            Some(r(20000, 20999))
        );
    }

    #[test]
    fn blocks_never_overlap_what_is_taken() {
        let taken = [r(20000, 20999), r(21500, 21999)];
        // The gap 21000..21499 holds 500, not 600.
        assert_eq!(
            allocate_block(r(20000, 29999), 500, &taken),
            Some(r(21000, 21499))
        );
        assert_eq!(
            allocate_block(r(20000, 29999), 600, &taken),
            Some(r(22000, 22599))
        );
    }

    #[test]
    fn the_host_range_is_skipped_even_inside_the_pool() {
        let host = r(32768, 60999);
        assert_eq!(
            allocate_block(r(30000, 65535), 3000, &[host]),
            Some(r(61000, 63999))
        );
        assert_eq!(allocate_block(r(30000, 65535), 5000, &[host]), None);
    }

    #[test]
    fn a_full_pool_has_nothing() {
        assert_eq!(allocate_block(r(20000, 20009), 11, &[]), None);
        assert_eq!(
            allocate_block(r(20000, 20009), 10, &[r(20005, 20005)]),
            None
        );
        assert_eq!(allocate_block(r(20000, 20009), 0, &[]), None);
    }

    #[test]
    fn the_top_of_the_port_space_is_usable() {
        assert_eq!(
            allocate_block(r(65530, 65535), 6, &[]),
            Some(r(65530, 65535))
        );
        assert_eq!(
            allocate_block(r(65000, 65535), 10, &[r(65000, 65525)]),
            Some(r(65526, 65535))
        );
    }

    #[test]
    fn unsorted_and_overlapping_taken_ranges() {
        let taken = [r(20500, 20600), r(20000, 20100), r(20050, 20550)];
        assert_eq!(
            allocate_block(r(20000, 21000), 100, &taken),
            Some(r(20601, 20700))
        );
    }
}
