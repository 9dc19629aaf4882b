#if canImport(Glibc)
    import CGlibcMalloc
    import Glibc
#endif

/// glibc gives each thread that contends for the heap an arena of its own, up to 8 per core. The relay hands
/// records from thread to thread (Kafka poll threads, the cooperative pool, delivery reports), so several
/// arenas fill and fragment, which cost it about 13 MiB of peak resident memory in the no-API benchmark. Two
/// arenas keep that down at no measurable cost in throughput. Called before the service starts its threads; an
/// operator's own `MALLOC_ARENA_MAX` wins.
func limitMallocArenas() {
    #if canImport(Glibc)
        guard getenv("MALLOC_ARENA_MAX") == nil else { return }
        _ = mallopt(M_ARENA_MAX, 2)
    #endif
}
