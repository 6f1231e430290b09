"""The exporter of my_exporter.py with one line broken: its mmap ignores vm_pgoff.

A mapping at a non-zero offset then shows the buffer's first pages instead of
the requested ones.  `dmabuf-sim check examples/my_broken_exporter.py:MyBrokenExporter`
names the rule (R60) and prints the shortest steps that show it.
"""

from my_exporter import MyExporter

from dmabuf_sim.mm.memory import remap_pfn_range


class MyBrokenExporter(MyExporter):
    def mmap(self, dmabuf, vma):
        first, _ = dmabuf.priv.entries[0]
        return remap_pfn_range(
            vma,
            vma.vm_start,
            first,  # BUG: forgot + vma.vm_pgoff
            vma.vm_end - vma.vm_start,
            vma.vm_page_prot,
        )
