"""The memory-management model: pages, caches, page tables, vmas, mm_struct, faults."""
