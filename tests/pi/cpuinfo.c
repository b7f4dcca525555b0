/* Print what the arm64 Linux kernel shows in /proc/cpuinfo, for the CPU this program runs on: its MIDR_EL1
 * (implementer, variant, part, revision; Linux lets user space read it, and so does qemu-user) and its HWCAP
 * bits, named in the kernel's order (arch/arm64/kernel/cpuinfo.c). Under qemu-user it describes the emulated
 * CPU model (QEMU_CPU), which qemu 7.2 itself does not show in /proc/cpuinfo. Built static by tests/pi. */
#include <stdio.h>
#include <sys/auxv.h>
#include <unistd.h>

static const char *const hwcap[] = {
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid",
    "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm",
    "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"};
static const char *const hwcap2[] = {
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint", "svei8mm",
    "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte"};

int main(void) {
    unsigned long midr, caps = getauxval(AT_HWCAP), caps2 = getauxval(AT_HWCAP2);
    __asm__ volatile("mrs %0, midr_el1" : "=r"(midr));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    for (long cpu = 0; cpu < cpus; cpu++) {
        printf("processor\t: %ld\nFeatures\t:", cpu);
        for (unsigned bit = 0; bit < sizeof hwcap / sizeof *hwcap; bit++)
            if (caps >> bit & 1) printf(" %s", hwcap[bit]);
        for (unsigned bit = 0; bit < sizeof hwcap2 / sizeof *hwcap2; bit++)
            if (caps2 >> bit & 1) printf(" %s", hwcap2[bit]);
        printf("\nCPU implementer\t: 0x%02lx\nCPU architecture: 8\nCPU variant\t: 0x%lx\nCPU part\t: 0x%03lx\n"
               "CPU revision\t: %lu\n\n", midr >> 24 & 0xff, midr >> 20 & 0xf, midr >> 4 & 0xfff, midr & 0xf);
    }
    return 0;
}
