//! The allocator setting the daemon makes at start (`roipd::heap`). Its own test binary with
//! one test: the allocator's counters belong to the process, so no other test may allocate
//! large blocks meanwhile.

/// After a large block is freed, a smaller large block still gets its own mapping (and so goes
/// back to the kernel when freed). With glibc's dynamic threshold the first free raised the
/// threshold past 1 MiB and the second block came from the heap.
#[test]
fn large_blocks_stay_mapped_after_a_larger_one_is_freed() {
    roipd::heap::fix_mmap_threshold();
    let Some(before) = roipd::heap::mapped_bytes() else {
        eprintln!("not glibc: nothing to check");
        return;
    };
    drop(std::hint::black_box(vec![1u8; 4 << 20]));
    let mapped_after_free = roipd::heap::mapped_bytes().unwrap();
    assert!(mapped_after_free <= before, "the 4 MiB block was unmapped when freed");

    let block = std::hint::black_box(vec![1u8; 512 << 10]);
    let mapped = roipd::heap::mapped_bytes().unwrap();
    assert!(
        mapped >= mapped_after_free + (512 << 10),
        "a 512 KiB block after a 4 MiB one was freed: {mapped} bytes mapped, {mapped_after_free} before it"
    );
    drop(block);
    assert!(roipd::heap::mapped_bytes().unwrap() <= mapped_after_free, "and unmapped when freed");
}
