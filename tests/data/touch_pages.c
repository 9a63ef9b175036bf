/* A freestanding program (no libc, so its trace holds nothing but this code) that makes
 * every kind of access the trace readers handle, on a 16-page static array:
 *   1. a 1-byte store to the first byte of each page;
 *   2. a read-modify-write (x86 `addb` on memory: lackey's "M") of each page's first byte;
 *   3. an 8-byte store straddling the boundary between pages 0 and 1 (touches both);
 *   4. a 1-byte load from each page, summed;
 * then exits with status 0 if the sum is what it should be. Built and traced as told in
 * tests/data/README.md; source of the lackey and memtrace fixtures there. */
#define PAGE_SIZE_BYTES 4096
#define PAGES 16

static volatile char pages[PAGES * PAGE_SIZE_BYTES] __attribute__((aligned(PAGE_SIZE_BYTES)));

static void exit_process(long status) {
    __asm__ volatile("syscall" : : "a"(60), "D"(status) : "rcx", "r11", "memory");
    __builtin_unreachable();
}

void _start(void) {
    for (int i = 0; i < PAGES; i++) pages[i * PAGE_SIZE_BYTES] = (char)i;
    for (int i = 0; i < PAGES; i++)
        __asm__ volatile("addb $1, %0" : "+m"(pages[i * PAGE_SIZE_BYTES]));
    /* Lands in bytes 4092..4099: the last 4 of page 0 and the first 4 of page 1. */
    *(volatile long *)(pages + PAGE_SIZE_BYTES - 4) = 0;
    int sum = 0;
    for (int i = 0; i < PAGES; i++) sum += pages[i * PAGE_SIZE_BYTES];
    /* Page 1's first byte was zeroed by the straddling store. */
    exit_process(sum == (PAGES * (PAGES - 1)) / 2 + PAGES - 2 ? 0 : 1);
}
